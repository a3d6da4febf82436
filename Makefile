# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
STAMP := $(VENV)/.vtl-installed
LOCK_VENV := .venv-lock
export DS_ACCELERATOR ?= cpu
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-slow lint lock bench clean

setup: $(STAMP)

# constraints.txt is the lock (tools/lock.py): every pip call takes it, so a fresh machine installs exactly the
# versions the suite last passed on. torch/torchvision go in first (README "Installation").
$(STAMP): pyproject.toml constraints.txt
	@command -v java >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq default-jre-headless) \
	  || echo "warning: no Java runtime; METEOR and the PTB tokenizer (vtl-eval dvc) will not work"
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  || echo "warning: no Chromium; the browser test of vtl-chat --web (tests/eval/test_web.py) will be skipped"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python tools/lock.py check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py --out data/demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/python tools/lock.py check
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow and not gpu" --timeout 900 --durations=25

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow" --timeout 1800

# Refresh the lock: resolve pyproject.toml afresh in a new venv (only tools/lock-roots.txt pinned) and freeze it into
# constraints.txt. This is how a dependency is upgraded: run `make test` on the new lock, commit it only if it passes.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q -c tools/lock-roots.txt torch torchvision
	$(LOCK_VENV)/bin/pip install -q -c tools/lock-roots.txt -e ".[dev]"
	$(LOCK_VENV)/bin/python tools/lock.py write $(LOCK_VENV)/bin/python
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt refreshed: run 'make test' on it and commit it only if the suite passes"

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info
