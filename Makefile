# Two commands on a fresh machine: `make run` and `make test`.
# Python 3.10-3.12 (whylogs 1.6.4 has no wheels for 3.13); override with `make PYTHON=python3.12`.
PYTHON ?= $(shell for p in python3.12 python3.11 python3.10 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' 2>/dev/null && echo $$p && break; done)
VENV ?= .venv
BIN := $(VENV)/bin
# Data specs resolve here (absolute: notebook tests run from nbs/); a checkout with ../shared/data beside it
# (CI, the developers) uses that copy. Missing months are downloaded from the TLC into this folder.
TAXI_DATA_DIR ?= $(abspath $(if $(wildcard ../shared/data/green_tripdata_2021-01.parquet),../shared/data,data))
export TAXI_DATA_DIR
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export WHYLOGS_NO_ANALYTICS ?= 1
TRAIN ?= green:2021-01
VALIDATION ?= green:2021-02
MODEL ?= gbm
HOST ?= 127.0.0.1
PORT ?= 9696
MONITOR ?= green:2021-03
FROM ?= 2021-03
TO ?= 2021-03

.PHONY: install install-all lab distclean run pipeline serve monitor tracking-server flow backfill test nbtest pytest check-sync docs screenshot bench bench-serve bench-monitor clean image test-image

## what the default path needs (make run): train, register, serve, monitor; pip shows its progress
install: $(VENV)/.installed

$(VENV)/.installed: setup.py settings.ini
	@test -n "$(PYTHON)" || { echo "error: need Python 3.10-3.12 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $@

## and every extra (settings.ini: test, lab, team, ...): what make test needs
install-all: $(VENV)/.installed-all

# an extra on top of the default install: .installed-lab, .installed-all, ...
$(VENV)/.installed-%: $(VENV)/.installed
	$(BIN)/python -m pip install -e '.[$*]'
	touch $@

## train on the default months (downloaded into $(TAXI_DATA_DIR) when missing; offline, one line says where to put them), register, promote, then serve;
## a champion already trained on the same months and model is kept, saying so (make pipeline trains again)
run: install
	$(BIN)/taxi-duration pipeline --train_data=$(TRAIN) --validation_data=$(VALIDATION) --model=$(MODEL) --skip_if_trained
	@$(MAKE) --no-print-directory serve

pipeline: install
	$(BIN)/taxi-duration pipeline --train_data=$(TRAIN) --validation_data=$(VALIDATION) --model=$(MODEL)

## serve the champion with gunicorn (production settings: gunicorn.conf.py) on $(HOST):$(PORT); live profiles go to $MONITORING_DIR (./monitoring)
serve: install
	$(BIN)/gunicorn -c gunicorn.conf.py -b $(HOST):$(PORT) app:app

## check a later month against the champion (exit 3 when an alert fires)
monitor: install
	$(BIN)/taxi-duration monitor --data=green:2021-03

## the team set-up: PostgreSQL in ./team/pgdata + mlflow server (served artifacts in ./team/artifacts) on $(HOST):5000
## then, elsewhere: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
tracking-server: $(VENV)/.installed-team
	$(BIN)/python -m taxi_duration.tracking --dir team --host $(HOST) --port 5000

## the pipeline once as a Prefect flow: the four papermill steps as tasks, then the monitor on $(MONITOR)
flow: $(VENV)/.installed-team
	$(BIN)/taxi-duration flow --train_data=$(TRAIN) --validation_data=$(VALIDATION) --model=$(MODEL) --monitor_data=$(MONITOR)

## past run months as the monthly schedule would have run them (month N: train N-2, validate and monitor N-1)
backfill: $(VENV)/.installed-team
	$(BIN)/taxi-duration backfill --from $(FROM) --to $(TO) --model=$(MODEL)

## the README's test command: notebooks in sync and clean, then the notebook tests and pytest side by side (on 2 cores
## pytest alone leaves a quarter of the CPU idle while its workers wait on servers and kernels); each one's output is
## shown whole when it ends
test: install-all check-sync
	@$(MAKE) --no-print-directory -j2 --output-sync=target nbtest pytest

check-sync:
	@$(BIN)/nbdev_export
	@git diff --quiet -- taxi_duration || { git --no-pager diff --stat -- taxi_duration; echo "error: nbdev_export changed taxi_duration/: edit the notebooks, not the .py files"; exit 1; }
	@$(BIN)/nbdev_clean
	@git diff --quiet -- nbs || { git --no-pager diff --stat -- nbs; echo "error: notebooks are not clean: run nbdev_clean and commit"; exit 1; }
	@$(BIN)/python -c "import glob, json, sys; bad = [f for f in sorted(glob.glob('nbs/*.ipynb')) if any(c.get('outputs') for c in json.load(open(f))['cells'])]; sys.exit('error: notebooks committed with outputs: ' + ' '.join(bad) if bad else 0)"
	@echo "notebooks and library in sync, notebooks clean"


# Notebooks whose examples read the real TLC months: without them (a fresh clone, offline) they are skipped, saying so.
REAL_MONTHS := $(wildcard $(TAXI_DATA_DIR)/green_tripdata_2021-0[123].parquet)
DATA_NBS = $(shell grep -l -E 'green:20[0-9][0-9]-[0-9][0-9]|shared/data|TAXI_DATA_DIR' nbs/*.ipynb | xargs -n1 basename | paste -sd'|')

# Each test process runs on one OpenMP thread: on 2 cores, two processes each spinning 2 OpenMP threads made a
# 3 s gbm fit take 60 s. Three pytest workers, because a pytest worker often waits (a server starting, a pipeline's
# kernel): on 2 cores -n 3 took 6 min 42 s where -n 2 took 7 min 40 s right before it; a fourth made `make test`
# slower (10 min 41 s against 9 min 2 s: more processes at once, more CPU). One notebook at a time beside them: the
# notebook tests then fill the cores pytest leaves idle instead of competing with it in its first minutes.
nbtest pytest: export OMP_NUM_THREADS = 1

# The tests never read what a user set for their own work (a mirror, a tracking server, a model, folders): they run
# with it unset, so `make test` means the same on every machine. TAXI_DATA_DIR stays: it says where the months are.
USER_SETTINGS := TAXI_TLC_BASE_URL TAXI_SAMPLE_DIR TAXI_DURATION_NBS MLFLOW_TRACKING_URI MLFLOW_REGISTRY_URI MODEL_URI \
                 MODEL_CACHE_DIR MONITORING_DIR REFRESH_SECONDS ALERT_WEBHOOK_URL HOST PORT
WITHOUT_USER_SETTINGS := env $(addprefix -u ,$(USER_SETTINGS))
# What nbtest and pytest run: all, or e.g. `make nbtest NBS=nbs/01_data.ipynb`, `make pytest TESTS=tests/test_data.py`.
NBS ?= nbs
TESTS ?= tests
PYTEST_WORKERS ?= 3
NBTEST_WORKERS ?= 1

nbtest:
ifeq ($(words $(REAL_MONTHS)),3)
	$(WITHOUT_USER_SETTINGS) $(BIN)/nbdev_test --n_workers $(NBTEST_WORKERS) --path $(NBS)
else
	@echo "nbtest: the real 2021 green months are not in $(TAXI_DATA_DIR): skipping the notebooks that read them ($(DATA_NBS)); put them there (make run downloads them) or set TAXI_DATA_DIR to run them"
	$(WITHOUT_USER_SETTINGS) $(BIN)/nbdev_test --n_workers $(NBTEST_WORKERS) --path $(NBS) --skip_file_re '^($(DATA_NBS))$$'
endif

# -rs: the summary lists every skipped test with its reason (e.g. where the real months were looked for); --durations:
# the slowest tests; tests/test_image.py is make test-image's (it builds and runs the container).
pytest:
	$(WITHOUT_USER_SETTINGS) $(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS) --dist loadfile --durations=12 $(if $(filter tests,$(TESTS)),--ignore=tests/test_image.py) $(TESTS); rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; fi; exit $$rc

## the notebooks as a website in _docs/ (open _docs/index.html): every notebook run, its outputs on its page
docs: export OMP_NUM_THREADS = 1
docs: $(VENV)/.installed-docs
	$(BIN)/python -m taxi_duration.docs --nbs nbs --dest _docs

## nbs/images/map.png, the picture the README opens with: the champion of the store make run uses (./mlflow.db, or
## $$MLFLOW_TRACKING_URI) answering one ride on the map page, in headless chromium (Debian's chromium and chromium-driver)
screenshot: $(VENV)/.installed-test
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  $(BIN)/python -c "from taxi_duration.docs import map_screenshot; print(map_screenshot('nbs/images/map.png'))"

## wall time per pipeline step on the real 2021-01/02 months
bench: install
	$(BIN)/python bench/pipeline.py

## the service against `mlflow models serve` under wrk (needs wrk and a champion)
bench-serve: install
	$(BIN)/python bench/serve.py

## cost of live monitoring: per call, and service throughput with and without
bench-monitor: install
	$(BIN)/python bench/monitor.py

## JupyterLab on $(HOST):$(LAB_PORT) (loopback): the notebooks with the project's kernel, $$TAXI_DATA_DIR set, and the tracking
## store make run uses (./mlflow.db)
LAB_PORT ?= 8888
lab: $(VENV)/.installed-lab
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  $(BIN)/jupyter lab --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) --ip=$(HOST) --port=$(LAB_PORT) --ServerApp.root_dir=$(CURDIR) --ServerApp.preferred_dir=$(CURDIR)/nbs

## remove what make run, make test and make lab wrote: the venv, the tracking store and its locks, runs, live profiles,
## the served models' cache. ./data stays: the downloaded months are the user's cache (slow to fetch, impossible offline).
## the service's container image from the Dockerfile (docker, else podman); e.g. IMAGE_ARGS="--build-arg BASE=..."
IMAGE ?= taxi-duration:latest
CONTAINER ?= $(shell command -v docker || command -v podman)
image:
	@test -n "$(CONTAINER)" || { echo "error: make image needs docker or podman"; exit 1; }
	$(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) -t $(IMAGE) $(IMAGE_ARGS) .

## build the image offline and run it against a mounted model store (podman, mmdebstrap, runc; as root); the Debian base and wheels are cached
test-image: install-all
	TAXI_TEST_IMAGE=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_image.py

clean:
	rm -rf $(VENV) mlflow.db .mlflow.db.*.lock mlruns runs monitoring model-cache *.egg-info .pytest_cache _proc

## clean, and the months downloaded into ./data too (never ../shared/data nor another TAXI_DATA_DIR)
distclean: clean
	rm -rf data
