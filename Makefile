# Two entry points, each doing its own set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench bundled-model clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cosynth demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

# Re-run the synthesizability benchmark from ../shared/data and ship its winner as the default model, and
# the voxel CNN at the epochs of the committed report (resumable: an interrupted run continues from
# runs/synth-benchmark; the cards are generated from the run).
VOXEL_EPOCHS ?= 2
bundled-model: $(STAMP)
	$(VENV)/bin/cosynth benchmark synth --voxel-epochs $(VOXEL_EPOCHS) --install

clean:
	rm -rf $(VENV) build dist src/*.egg-info
