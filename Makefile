# Readmission MLOps platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8
EXTRAS ?= airflow,train,api,ui,load,local,jupyter,dev
LOCK := requirements/lock.txt
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

export READMISSION_STATE_DIR ?= $(CURDIR)/.local
export READMISSION_DATA_DIR ?= $(CURDIR)/data
# A verified copy beside the project (this workplace's ../shared) saves the UCI download.
SHARED_CSV := $(abspath $(CURDIR)/../shared/data/diabetic_data.csv.gz)
ifeq ($(origin DIABETES_CSV),undefined)
ifneq ($(wildcard $(SHARED_CSV)),)
export DIABETES_CSV := $(SHARED_CSV)
endif
endif

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The reference readmission/performance.py's estimation is tested against, installed with
# `dev` but without its dependencies: those its estimators import are in the `dev` extra.
NANNYML := nannyml==0.13.1

$(STAMP): pyproject.toml $(LOCK) Makefile | $(UV)
	$(UV) pip install --python $(BIN)/python --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	$(if $(findstring dev,$(EXTRAS)),$(UV) pip install --python $(BIN)/python --quiet --no-deps "$(NANNYML)")
	@# Bytecode for every installed module: uv installs none, and where PYTHONDONTWRITEBYTECODE
	@# is set no process writes it, so each one (every Airflow task, the API) compiled ~3,000
	@# modules from source again (4.7 s). Files already compiled are skipped; a few packages
	@# ship files that are not Python 3 on purpose (test data), hence no failure on errors.
	@$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install the package with the locked dependencies

.PHONY: lock
lock: | $(UV) ## Re-resolve requirements/lock.txt from pyproject.toml (then each image's set)
	$(UV) pip compile pyproject.toml --all-extras --universal --python-version 3.11 -o $(LOCK)
	$(MAKE) --no-print-directory requirements

# The images' Python (their python:<version>-slim-bookworm base): the lock has entries
# that differ by patch release (e.g. soupsieve for < 3.11.5).
IMAGE_PYTHON := 3.11.16
# Each image's pinned set (requirements file=extras): the lock's versions for exactly the
# packages those extras need on Linux, so an image installs no more than its component uses.
IMAGE_REQUIREMENTS := \
  airflow/requirements.txt=airflow,train \
  app/requirements.txt=api \
  mlflow/requirements.txt=tracking \
  streamlit/requirements.txt=ui \
  locust/requirements-locust.txt=load \
  jupyter/requirements.txt=train,jupyter

.PHONY: requirements
requirements: | $(UV) ## Regenerate each image's pinned requirements file from the lock
	@set -e; for pair in $(IMAGE_REQUIREMENTS); do \
	  out=$${pair%%=*}; extras=$${pair#*=}; \
	  $(UV) pip compile pyproject.toml --quiet $$(printf -- '--extra %s ' $${extras//,/ }) \
	    -c $(LOCK) --python-version $(IMAGE_PYTHON) --python-platform linux \
	    --custom-compile-command 'make requirements' -o $$out; \
	  echo "$$out: $$(grep -c '^[a-zA-Z0-9]' $$out) pins (extras $$extras)"; \
	done

# --- Offline image builds: `make wheelhouse` puts every wheel the images install (each
# image's pinned set above and the build backend of requirements/build.txt) in WHEELHOUSE,
# for the images' platform (IMAGE_PYTHON, CPython, glibc of Debian bookworm). The Dockerfiles
# install from it with no index when it holds wheels, from the index otherwise: same pins.
WHEELHOUSE := wheelhouse
BUILD_REQUIREMENTS := requirements/build.txt
# pip does not widen a --platform to older glibc versions: every manylinux tag up to 2.36.
WHEEL_PLATFORMS := manylinux1_x86_64 manylinux2010_x86_64 manylinux2014_x86_64 \
  $(foreach minor,$(shell seq 5 36),manylinux_2_$(minor)_x86_64)

.PHONY: wheelhouse
wheelhouse: | $(BIN)/python ## Download every wheel the images install into wheelhouse/ (offline builds)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest $(WHEELHOUSE) \
	  --python-version $(IMAGE_PYTHON) --implementation cp --abi cp311 \
	  $(foreach platform,$(WHEEL_PLATFORMS),--platform $(platform)) \
	  $(foreach pair,$(IMAGE_REQUIREMENTS),-r $(firstword $(subst =, ,$(pair)))) \
	  -r $(BUILD_REQUIREMENTS)
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1)"

.PHONY: run
run: venv ## Set up and run the embedded local mode end to end (Airflow UI on :8080)
	$(BIN)/python -m readmission local

.PHONY: replay
replay: venv ## The closed loop once in the local mode: held-out encounters served, their outcomes loaded, realized vs estimated vs test
	$(BIN)/python -m readmission replay

.PHONY: pipeline
pipeline: venv ## Run the pipeline once without Airflow's UI (CLI steps), then print the summary
	$(BIN)/python -m readmission load-raw
	$(BIN)/python -m readmission clean

.PHONY: lint
lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: venv ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# What the tests need beyond .venv (PostgreSQL server, Chromium, Prometheus, kubectl,
# Python 3.11): installed with apt as root, otherwise the exact command is printed and make
# stops. Listed before venv, which needs Python 3.11: make builds prerequisites in order.
.PHONY: test-prerequisites
test-prerequisites: ## Check (as root: install) the Debian packages the tests need
	@PYTHON=$(PYTHON) scripts/test-prerequisites

.PHONY: test-data
test-data: venv ## Find and verify the UCI file the data tests read (downloaded into data/ if absent)
	$(BIN)/python -m readmission locate

# `make test` runs the tests on two worker processes (pytest-xdist), whole files to a
# worker (a module's fixtures are built once, and the fuzzing module counts its cases in
# one process), the longest modules handed out first (tests/conftest.py): about a fifth
# faster than one process on two cores. `make test TEST_WORKERS=0` runs them in this
# process, one by one (three workers: not faster in the one run made, docs/performance.md).
TEST_WORKERS ?= 2
PYTEST_WORKERS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: test
test: test-prerequisites venv test-data lint ## Set up and run every test (installs what the machine lacks)
	$(BIN)/pytest $(PYTEST_WORKERS)

.PHONY: test-fast
test-fast: test-prerequisites venv test-data ## Tests without the slow ones
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not slow"

.PHONY: test-unit
test-unit: venv test-data ## Only the tests that need no server (seconds)
	$(BIN)/pytest -m unit

.PHONY: bench-tools
bench-tools: ## Install the load generator the serving benchmark uses (Debian's wrk)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

.PHONY: bench
bench: venv bench-tools ## Run the benchmarks in bench/ (load, model quality and choices, TreeSHAP, serving)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/choices.py
	$(BIN)/python bench/treeshap.py
	$(BIN)/python bench/serve.py

.PHONY: bench-scale
bench-scale: venv ## How cost grows: load, cleaning, training, scoring at 1x-8x the data (docs/scaling.md; ~25 min)
	$(BIN)/python bench/scale.py

LOAD_DIR ?= .local/load
.PHONY: load
load: venv ## Load-test the API at API_URL with Locust (LOAD_* settings); reports in .local/load
	@mkdir -p $(LOAD_DIR) && rm -f $(LOAD_DIR)/load_*.csv $(LOAD_DIR)/load.html
	@$(BIN)/locust -f locust/locustfile.py --headless --only-summary \
	  --csv $(LOAD_DIR)/load --html $(LOAD_DIR)/load.html; code=$$?; \
	if [ -f $(LOAD_DIR)/load.html ]; then \
	  echo "Reports: $(abspath $(LOAD_DIR))/load.html and load_*.csv there (stats, history, failures, exceptions)"; \
	fi; \
	exit $$code

# --- Container images (docs/deployment.md). REGISTRY and TAG default to .env's values, as
# in Compose; `make images REGISTRY=... TAG=...` overrides them.
env_value = $(shell sed -n 's/^$(1)=//p' .env 2>/dev/null | tail -n 1)
ifeq ($(origin REGISTRY),undefined)
REGISTRY := $(or $(call env_value,REGISTRY),readmission)
endif
ifeq ($(origin TAG),undefined)
TAG := $(or $(call env_value,TAG),0.1.0)
endif
DOCKER ?= docker
# image name=Dockerfile; each is built with the repository root as context.
IMAGES := \
  airflow=airflow/Dockerfile \
  fastapi=app/Dockerfile \
  mlflow=mlflow/Dockerfile \
  streamlit=streamlit/Dockerfile \
  locust=locust/Dockerfile \
  jupyter=jupyter/dockerfile \
  postgres=initdb/Dockerfile
image_name = $(firstword $(subst =, ,$(1)))
image_file = $(lastword $(subst =, ,$(1)))
image_ref = $(REGISTRY)/$(call image_name,$(1))-mlops-p3:$(TAG)
define newline


endef

.PHONY: docker-check
docker-check: ## Check that docker and its engine answer (images and push run it first)
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make: '$(DOCKER)' is not installed; \
	install Docker (docs.docker.com/get-docker) to build or push the images" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make: no Docker engine answers ('$(DOCKER) \
	info' failed): start the Docker daemon, or point DOCKER_HOST at one" >&2; exit 1; }

.PHONY: images
images: docker-check ## Build the seven images as REGISTRY/<name>-mlops-p3:TAG (.env)
	$(foreach i,$(IMAGES),$(DOCKER) build -f $(call image_file,$(i)) -t $(call image_ref,$(i)) .$(newline))

.PHONY: push
push: docker-check ## Push the seven images to REGISTRY (build them first: make images)
	$(foreach i,$(IMAGES),$(DOCKER) push $(call image_ref,$(i))$(newline))

.PHONY: image-names
image-names: ## Print the seven image references, one a line (REGISTRY, TAG)
	@printf '%s\n' $(foreach i,$(IMAGES),$(call image_ref,$(i)))

# --- The Docker Compose deployment on this machine's engine (tests/compose/stack.py): the
# README's Docker Compose commands, images that cannot be pulled replaced by stand-ins built
# from Debian's packages (tests/compose/standins.py), every step printed with its duration.
COMPOSE_TEST_TIMEOUT ?= 3600

.PHONY: compose-up
compose-up: docker-check venv wheelhouse data ## Build the images, start the three Compose projects, wait until all are healthy
	$(BIN)/python -m tests.compose.stack up

.PHONY: compose-down
compose-down: docker-check venv ## Remove the Compose projects' containers, volumes and network
	$(BIN)/python -m tests.compose.stack down

.PHONY: compose-test
compose-test: docker-check venv wheelhouse data ## compose-up, the end-to-end checks over the published ports, compose-down
	$(BIN)/pytest tests/compose/stack_checks.py -p no:cacheprovider -s --timeout $(COMPOSE_TEST_TIMEOUT)

.PHONY: hadolint
hadolint: venv ## Lint the seven Dockerfiles with hadolint
	$(BIN)/hadolint $(foreach i,$(IMAGES),$(call image_file,$(i)))

SOAK_USERS ?= 50
SOAK_SECONDS ?= 300
.PHONY: soak
soak: venv ## Soak (~7 min, loopback): Locust at SOAK_USERS users for SOAK_SECONDS, a model promoted half-way
	$(BIN)/python bench/soak.py --users $(SOAK_USERS) --seconds $(SOAK_SECONDS)

AUDIT_FLAGS ?=
.PHONY: audit
audit: venv ## Check every locked package against known vulnerabilities (pip-audit; needs PyPI or OSV)
	$(BIN)/pip-audit --requirement $(LOCK) --no-deps --disable-pip --strict \
	  --progress-spinner off $(AUDIT_FLAGS)

.PHONY: data
data: venv ## Put the verified data file in data/, which the containers mount (copy or UCI download)
	$(BIN)/python -m readmission locate --into data

.PHONY: k8s-secrets
k8s-secrets: ## Write kompose/**/secrets/*.env (the Kubernetes Secrets) from .env, refusing weak passwords
	python3 kompose/secrets_from_env.py

.PHONY: k8s-sync
k8s-sync: venv ## Render the alert rules; refresh kompose/base's copies of the Prometheus config and rules and the Grafana files
	$(BIN)/python -m readmission.ops.monitoring render-prometheus --mode kubernetes \
	  --out kompose/base/prometheus/prometheus.yml
	$(BIN)/python -m readmission.ops.monitoring render-alerts --out prometheus/alerts.yml
	cp prometheus/alerts.yml kompose/base/prometheus/alerts.yml
	rm -rf kompose/base/grafana && mkdir -p kompose/base/grafana
	cp -r grafana/provisioning grafana/dashboards kompose/base/grafana/

.PHONY: k8s-apply
k8s-apply: k8s-secrets ## Deploy the cluster side: kubectl apply -k kompose/
	kubectl apply -k kompose/

.PHONY: clean-state
clean-state: ## Delete the local mode's state (.local: SQLite stores, Airflow home)
	rm -rf .local
