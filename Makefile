# Two entry points for a fresh machine: `make run` (main job) and `make test`.
# Everything installs into .venv; torch comes from the pinned CPU wheel where one is on disk.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.steerheal-installed

.PHONY: install run demo test lint bench bench-peers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,sweep]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/steerheal run --preset demo --out runs/demo --resume

demo: run

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

# steering-vectors and repeng for the peer comparison in `python -m bench` (see bench/peers.py).
bench-peers: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,sweep,bench]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps steering-vectors==0.12.2 repeng==0.4.0

clean:
	rm -rf $(VENV) runs .pytest_cache
