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
DATA_SOURCE ?= https://raw.githubusercontent.com/ageron/handson-ml2/master/datasets/housing/housing.csv
HOST ?= 127.0.0.1
PORT ?= 5001
V2_PORT ?= 8080
V2_MODEL_NAME ?= california-housing
# One OpenMP thread per server process: a 1-row predict took ~800 ms with the
# default thread pool inside `mlflow models serve` and ~20 ms with one thread.
SERVE_THREADS ?= 1
PYTEST_ARGS ?=
# Extra `-P name=value` parameters for the lifecycle entry points, e.g.
# make promote MLFLOW_PARAMS='-P min_improvement=500'
MLFLOW_PARAMS ?=

.PHONY: venv data train serve serve-v2 predict test validate-deploy evaluate promote rollback tune

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	python$(PYTHON_VERSION) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --python $(PY) requirements.lock
	# DVC keeps its site cache inside the project instead of /var/tmp/dvc.
	$(VENV)/bin/dvc config --local core.site_cache_dir $(CURDIR)/.dvc/site-cache
	touch $@

data: venv
	$(PY) -m projects.get_data --source "$(DATA_SOURCE)"

train: data
	mlflow run . -e train --env-manager local --experiment-name $(EXPERIMENT)

serve: venv
	OMP_NUM_THREADS=$(SERVE_THREADS) mlflow models serve -m "$(MODEL_URI)" --env-manager local --host $(HOST) --port $(PORT)

# The command the cluster's ClusterServingRuntime container runs (there with --http_host=0.0.0.0
# and --model_dir=/mnt/models, filled by the models:/ ClusterStorageContainer).
serve-v2: venv
	OMP_NUM_THREADS=$(SERVE_THREADS) python -m mlflowserver --model_name=$(V2_MODEL_NAME) --model_dir="$(MODEL_URI)" --http_host=$(HOST) --http_port=$(V2_PORT)

predict: venv
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict INPUT=in.csv OUTPUT=out.json" >&2; exit 2; }
	OMP_NUM_THREADS=$(SERVE_THREADS) mlflow models predict -m "$(MODEL_URI)" -i "$(INPUT)" -o "$(OUTPUT)" -t csv --env-manager local

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Offline checks of k8s/, docker-compose.yml and the Dockerfile (no cluster or Docker engine needed).
validate-deploy: venv
	$(PY) -m tests.deploy.validate

# Model lifecycle (docs/mlflow/model-registry.md): train → evaluate → promote, rollback, tune.
evaluate: data
	mlflow run . -e evaluate --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

promote: data
	mlflow run . -e promote --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

rollback: venv
	mlflow run . -e rollback --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)

tune: data
	mlflow run . -e tune --env-manager local --experiment-name $(EXPERIMENT) $(MLFLOW_PARAMS)
