# Every target creates .venv and installs the project into it when missing, so each works on a fresh machine.
VENV      ?= .venv
PYTHON    ?= python3
TORCH     ?= torch==2.13.0
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-gpu browser lint format bench reproduce reproduce-e2e reproduce-e2e-distilled reproduce-instruct lm-eval page-images clean

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
BENCH_ARGS ?= --data ../shared/data/lm1b/train.txt
bench: $(STAMP)
	test -f runs/demo/final/diffusion.json || $(MAKE) demo
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert bench $(BENCH_ARGS)

# Table 2 at small scale (docs/results.md); about 2 h 30 min on 2 CPU cores (14 rows), re-running reuses finished rows.
REPRODUCE_ARGS ?=
reproduce: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce $(REPRODUCE_ARGS)

# Data-to-text on E2E NLG (docs/results-e2e.md): 17 models of 400 steps (4 of them students of the AR model's
# distilled texts, data/e2e-distilled/) and 42 decoders on the 630 test MRs; re-running reuses what is done.
reproduce-e2e: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce-e2e $(REPRODUCE_ARGS)

# Its distillation rows alone (docs/results-e2e-distilled.md): the AR teacher, 3 students, 10 decoders; ~65 min.
reproduce-e2e-distilled: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce-e2e --plan configs/reproduce-e2e-distilled.yaml $(REPRODUCE_ARGS)

# Instruction tuning on Alpaca (docs/results-instruct.md): lm1b adaptation, then Alpaca, for a diffusion and an AR model.
reproduce-instruct: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce-instruct $(REPRODUCE_ARGS)

# The local harness tasks (e2e_choice, e2e_gen) for the E2E reproduction's AR, DiffusionBERT spindle, MDLM and
# RADD models (LM_EVAL_MODELS: same backbone, data and 400 steps; trained first when missing, about 10 minutes
# each on the 2-core CPU, in the whole plan's folders) into docs/results-lm-eval.md, with the settings and how
# the Monte Carlo standard error of a loglikelihood falls with the draws (stratified and independent, on the
# first 25 MRs). The first 100 test MRs and 32 draws per loglikelihood: about 15 minutes once the models exist.
# LM_EVAL_CHECKPOINTS="DIR ..." evaluates other models and trains nothing.
comma := ,
LM_EVAL_MODELS ?= ar,spindle,mdlm,radd
LM_EVAL_CHECKPOINTS ?= $(patsubst %,runs/reproduce-e2e/%/final,$(subst $(comma), ,$(LM_EVAL_MODELS)))
LM_EVAL_REPORT ?= docs/results-lm-eval.md
LM_EVAL_ARGS ?= --tasks e2e_choice,e2e_gen --limit 100 --model-args mc_draws=32 --draws 4,8,32 --draws-limit 25
lm-eval: $(STAMP)
	$(if $(filter file,$(origin LM_EVAL_CHECKPOINTS)),HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert reproduce-e2e --models $(LM_EVAL_MODELS))
	HF_HUB_OFFLINE=1 $(VENV)/bin/diffusionbert lm-eval $(addprefix --checkpoint ,$(LM_EVAL_CHECKPOINTS)) \
		--report $(LM_EVAL_REPORT) $(LM_EVAL_ARGS)

# pytest exits 5 when a filter selects no test: that is not a failure.
test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The GPU smoke path (tests/test_gpu.py): every objective a few steps on CUDA, sampling, bf16 against fp32;
# skipped with a message where no CUDA device is present.
test-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_gpu.py -rs $(PYTEST_ARGS)

# Debian's Chromium for the live page's browser tests (tests/apps/test_serve.py), installed once when missing.
browser:
	@bash tools/install_browser.sh

# The README's screenshot and screen recording of `diffusionbert serve` (docs/img/), from the demo model.
PAGE_ARGS ?=
page-images: $(STAMP) browser
	test -f runs/demo/final/diffusion.json || $(MAKE) demo
	HF_HUB_OFFLINE=1 $(PY) tools/record_page.py --checkpoint runs/demo/final --out docs/img $(PAGE_ARGS)

# ruff, the import floors of pyproject.toml ([tool.importlinter]) and no method name tested outside methods.py.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools
	$(VENV)/bin/lint-imports --no-cache
	$(PY) tools/check_method_names.py src/diffusionbert

format: $(STAMP)
	$(VENV)/bin/ruff format src tests tools
	$(VENV)/bin/ruff check --fix src tests tools

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
