# The two commands of README.md's Quick start: `make run` and `make test`.
# Each creates .venv on first use; the stamp files re-install when requirements change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= models/correct-6m
PORT ?= 8100

.PHONY: run test test-quick bench-small bench-0.5b demo-model eval clean

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/fleetserve up --model $(MODEL) --port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest -q

# The inner loop: every test not marked slow (no processes, servers or training).
test-quick: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow"

bench-small: $(VENV)/.dev
	$(VENV)/bin/fleetserve init-model --preset 5m --out build/bench-5m
	$(VENV)/bin/fleetserve bench --model build/bench-5m --num-prompts 256 --repeat 3

bench-0.5b: $(VENV)/.dev
	$(VENV)/bin/fleetserve init-model --preset qwen2.5-0.5b --no-weights --out build/bench-0.5b
	$(VENV)/bin/fleetserve bench --model build/bench-0.5b --load-format dummy --num-prompts 64 --hf-batch-sizes 1,16,64

# Rebuild the bundled model from the corpus (about an hour on 2 cores) and score it.
demo-model: $(VENV)/.runtime
	$(VENV)/bin/fleetserve train-demo --out build/correct-6m

eval: $(VENV)/.runtime
	$(VENV)/bin/fleetserve eval $(MODEL)

clean:
	rm -rf $(VENV) build
