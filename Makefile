# Two commands do all set-up on a fresh machine (Debian, Python 3.11):
#   make train   create .venv, install everything, train the embedded default (tiny model, sample E2E)
#   make test    the same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup train test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	@# WordNet 3.0 for METEOR, offline: Debian's wordnet-base (NLTK's download works where online)
	@if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null; fi
	@[ -d /usr/share/wordnet ] || echo "note: WordNet not installed (apt-get install wordnet-base); E2E METEOR will be NaN"
	touch $@

train: setup
	$(BIN)/python train.py

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs outputs multirun .nltk_data
