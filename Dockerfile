# syntax=docker/dockerfile:1.7
# Infinity Embedding Worker for RunPod serverless.
#
#   docker buildx bake                                     # generic image: models come at start-up
#   docker buildx bake baked --set baked.args.MODEL_NAMES="BAAI/bge-small-en-v1.5"
#   docker build --build-arg MODEL_NAMES="BAAI/bge-small-en-v1.5" \
#       --secret id=hf_token,env=HF_TOKEN -t infinity-worker .      # models baked in
#   python builder/smoke_image.py                          # build, then test on a GPU host
#
# One CUDA line: 12.9, declared in requirements-gpu.txt (torch from PyTorch's cu129 index,
# onnxruntime-gpu 1.26, the last CUDA 12 build on PyPI; CTranslate2 links cuBLAS 12), in
# docker-bake.hcl's tags and in both .runpod files. Why 12.9:
# - a CUDA 12.x build runs on every 12.x and 13.x driver (minor-version compatibility), the
#   widest pool of RunPod hosts; PyPI's torch 2.13 is a CUDA 13 build, which needs a
#   driver >= 580 and sees no GPU on the rest;
# - 12.9 is the newest CUDA 12 that PyTorch builds torch 2.13 for, with Blackwell kernels;
# - CTranslate2 needs CUDA 12's cuBLAS, onnxruntime-gpu 1.27 and later CUDA 13's.
# The CUDA libraries come as nvidia-*-cu12 wheels with torch, so the base is a plain final
# CPython release (not a CUDA image, whose NVIDIA_REQUIRE_CUDA would refuse older drivers);
# the host's driver is mounted in by the NVIDIA container runtime.
# Cold start: a baked model loads from the image with no download; otherwise RunPod's
# cached models, then a network volume, then a download (see README, "Deploy on RunPod").

ARG PYTHON_VERSION=3.11.14

# --- a final CPython release ----------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS python
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# --- dependencies, in a venv that the final stage copies (no pip or caches left behind) ---
FROM python AS dependencies
COPY requirements.txt requirements-gpu.txt /tmp/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-gpu.txt \
 && /opt/venv/bin/python -c "import torch, onnxruntime; assert torch.version.cuda.startswith('12.'), torch.version.cuda; assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers()"

# --- the worker ---------------------------------------------------------------------------
FROM python AS worker
COPY --from=dependencies /opt/venv /opt/venv
# The NVIDIA runtime mounts the driver and GPUs into the container; CTranslate2 and ONNX
# Runtime find CUDA 12's libraries in torch's nvidia-*-cu12 wheels.
ENV PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib \
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
COPY src/embedding_worker/__init__.py src/embedding_worker/errors.py src/embedding_worker/
COPY src/embedding_worker/engine/__init__.py src/embedding_worker/engine/onnx_support.py src/embedding_worker/engine/
COPY src/embedding_worker/engine/model_sources/ src/embedding_worker/engine/model_sources/
RUN --mount=type=secret,id=hf_token python builder/bake_models.py
ENV MODEL_NAMES=${MODEL_NAMES} \
    MODEL_REVISIONS=${MODEL_REVISIONS} \
    BACKEND=${BACKEND} \
    ONNX_QUANTIZED=${ONNX_QUANTIZED}

COPY src/ src/
# Start-up work done once, here: bytecode of the worker's own modules, and transformers'
# index of its model classes (src/embedding_worker/engine/transformers_index.py, 0.5 s of
# every cold start otherwise).
RUN python -m compileall -q src \
 && PYTHONPATH=src python -m embedding_worker.engine.transformers_index
# ENDPOINT_TYPE=load_balancer: the API and health on PORT (RunPod's default, 80)
EXPOSE 80
CMD ["python", "-u", "src/handler.py"]
