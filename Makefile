# Every target creates .venv and installs the project into it when missing, so each works on a fresh machine.
VENV      ?= .venv
PYTHON    ?= python3
TORCH     ?= torch==2.13.0
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint format bench reproduce clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(VENV)/bin/pip install --quiet "$(TORCH)" 2>&1 | grep -v '^WARNING: Location' || true
	$(VENV)/bin/pip install --quiet -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import torch, transformers, diffusionbert" 
	touch $(STAMP)

DEMO_ARGS ?=
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert demo $(DEMO_ARGS)

# The sampling benchmark uses the demo model: it is trained first when missing.
bench: $(STAMP)
	test -f runs/demo/final/diffusion.json || $(MAKE) demo
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert bench

# Table 2 at small scale (docs/results.md); about 1 h 30 min on 2 CPU cores, re-running reuses finished rows.
REPRODUCE_ARGS ?=
reproduce: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce $(REPRODUCE_ARGS)

# pytest exits 5 when a filter selects no test: that is not a failure.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
