# Two commands set everything up on a fresh machine:
#   make train  - the main job: pyro-dirmag train (a quick default), then evaluate and prune
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
	$(PY) -m pip install --quiet -e ".[dev,train]"
	touch $(STAMP)

# make train RUN=runs/NAME ARGS="--model lenet5 --epochs 20" (RUN must not exist yet)
RUN ?= runs/train-$(shell date +%Y%m%d-%H%M%S)
train: $(STAMP)
	$(PY) -m pyro_dirmag train --train-size 10000 --val-size 1000 --epochs 5 --out $(RUN) $(ARGS)
	$(PY) -m pyro_dirmag evaluate $(RUN)
	$(PY) -m pyro_dirmag prune $(RUN) --criterion agreement --tolerance 0.005
	$(PY) -m pyro_dirmag plot $(RUN)
	@echo "outputs of make train: $(RUN)"

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
