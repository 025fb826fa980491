# Two commands set everything up on a fresh machine:
#   make train  - the main job: train a Bayesian LeNet-300-100 on MNIST, evaluate, prune
#   make test   - lint and the test suite
# Each creates .venv with plain pip on first use and reuses it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) examples/train_dirmag_mnist.py $(ARGS)

demo: $(STAMP)
	$(PY) -m pyro_dirmag.demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

docs: $(STAMP)
	$(PY) -m sphinx -b html -q docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV)
