# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
STAMP := $(VENV)/.vtl-installed
export DS_ACCELERATOR ?= cpu
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

# torch/torchvision go in first and stay pinned through constraints.txt for every later pip call.
$(STAMP): pyproject.toml constraints.txt
	@command -v java >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq default-jre-headless) \
	  || echo "warning: no Java runtime; METEOR and the PTB tokenizer (vtl-eval dvc) will not work"
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  || echo "warning: no Chromium; the browser test of vtl-chat --web (tests/eval/test_web.py) will be skipped"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py --out data/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" --timeout 900 --durations=25

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow" --timeout 1800

clean:
	rm -rf $(VENV) build *.egg-info
