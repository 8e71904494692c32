# qzoo: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-extras-stamp

.PHONY: install demo test test-fast clean postgres results results-page

install: $(STAMP)

# torch is pinned to 2.13.0 in pyproject.toml (a local CPU wheel on our machines).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: train DQN on CartPole-v1 until an evaluation averages >= 475 over 20 episodes,
# then evaluate the best checkpoint on 20 fresh episodes and print the score.
demo: install
	@run=runs/demo-cartpole-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/qzoo train --env CartPole-v1 --until-solved -n 100000 --seed 0 --run-dir $$run && \
	$(BIN)/qzoo evaluate $$run --best --episodes 20

# Every tier: unit, integration, learning, Atari, EnvPool and PostgreSQL tests.
test: install postgres $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# The tests also run the optional extras make demo does not need: envpool (vec_env: envpool), ray (actors > 0,
# qzoo sweep), sb3 (SB3 zips in and out) and wandb (--track, offline).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,envpool,ray,sb3,wandb]'
	touch $(TEST_STAMP)

# The distributed-tuning test starts its own PostgreSQL server; install Debian's where it is missing.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

test-fast: install $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# docs/results.md's blocks (benchmarks/results/): make results BLOCK=classic|spaceinvaders|atari100k|minatar, or every
# block one after the other. Each grid is a qzoo sweep into results/BLOCK/GRID: the same command again runs only what
# is missing and resumes unfinished runs. ADDRESS=auto runs on the Ray cluster this machine belongs to; CPUS=1 runs
# one run at a time here.
BLOCK ?= all
RAY_STAMP := $(VENV)/.ray-extra-stamp

$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[ray]'
	touch $(RAY_STAMP)

results: install $(RAY_STAMP)
	$(BIN)/python benchmarks/results/run.py $(BLOCK) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(CPUS),--cpus $(CPUS))

# docs/results.md, its figures and benchmarks/results/summary.json from whatever the sweep folders and records hold;
# BLOCK=spaceinvaders writes only that block's section and keeps the others as the page has them.
results-page: install
	$(BIN)/python benchmarks/results/page.py $(if $(filter-out all,$(BLOCK)),--block $(BLOCK))

clean:
	rm -rf $(VENV) runs .pytest_cache
