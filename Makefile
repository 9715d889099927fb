PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/relay-plugin demo

# The bench extra adds requests (for the naive baseline app) and py-spy (for --profile).
$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

bench-quick: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
