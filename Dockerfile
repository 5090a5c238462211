# syntax=docker/dockerfile:1.7
# Infinity Embedding Worker for RunPod serverless.
#
#   docker buildx bake                                     # generic image: models come at start-up
#   docker buildx bake baked --set baked.args.MODEL_NAMES="BAAI/bge-small-en-v1.5"
#   docker build --build-arg MODEL_NAMES="BAAI/bge-small-en-v1.5" \
#       --secret id=hf_token,env=HF_TOKEN -t infinity-worker .      # models baked in
#
# Cold start: a baked model loads from the image with no download; otherwise RunPod's
# cached models, then a network volume, then a download (see README, "Deploy on RunPod").

ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=22.04

# --- Python 3.11 on the CUDA runtime ----------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# --- dependencies, in a venv that the final stage copies (no pip or caches left behind) ---
FROM python AS dependencies
COPY requirements.txt /tmp/requirements.txt
# torch first and alone, at the pinned version: the CUDA build from PyPI.
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install "$(grep -E '^torch==' /tmp/requirements.txt)" \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- the worker ---------------------------------------------------------------------------
FROM python AS worker
COPY --from=dependencies /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    BAKED_HF_CACHE=/opt/models/hub \
    HF_HUB_DISABLE_TELEMETRY=1 \
    INFINITY_ANONYMOUS_USAGE_STATS=0
WORKDIR /worker

# Models named at build time are baked into the image (a layer before the code, so code
# changes do not download them again). Without MODEL_NAMES the image is generic.
ARG MODEL_NAMES=""
ARG MODEL_REVISIONS=""
ARG BACKEND=torch
ARG ONNX_QUANTIZED=false
COPY builder/bake_models.py builder/
COPY src/embedding_worker/__init__.py src/embedding_worker/errors.py src/embedding_worker/model_sources.py src/embedding_worker/onnx_support.py src/embedding_worker/
RUN --mount=type=secret,id=hf_token python builder/bake_models.py
ENV MODEL_NAMES=${MODEL_NAMES} \
    MODEL_REVISIONS=${MODEL_REVISIONS} \
    BACKEND=${BACKEND} \
    ONNX_QUANTIZED=${ONNX_QUANTIZED}

COPY src/ src/
CMD ["python", "-u", "src/handler.py"]
