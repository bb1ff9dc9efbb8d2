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

.PHONY: install run pipeline serve monitor tracking-server flow backfill test nbtest pytest check-sync docs bench bench-serve bench-monitor clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py settings.ini
	@test -n "$(PYTHON)" || { echo "error: need Python 3.10-3.12 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,team,docs]'
	touch $@

## train on the default months (downloaded into $(TAXI_DATA_DIR) when missing; offline, one line says where to put them), register, promote, then serve
run: pipeline serve

pipeline: install
	$(BIN)/taxi-duration pipeline --train_data=$(TRAIN) --validation_data=$(VALIDATION) --model=$(MODEL)

## serve the champion with gunicorn (2 threaded workers: serve.GUNICORN_ARGS) on $(HOST):$(PORT); live profiles go to $MONITORING_DIR (./monitoring)
serve: install
	$(BIN)/gunicorn $$($(BIN)/python -c 'from taxi_duration.serve import GUNICORN_ARGS; print(GUNICORN_ARGS)') -b $(HOST):$(PORT) app:app

## check a later month against the champion (exit 3 when an alert fires)
monitor: install
	$(BIN)/taxi-duration monitor --data=green:2021-03

## the team set-up: PostgreSQL in ./team/pgdata + mlflow server (served artifacts in ./team/artifacts) on $(HOST):5000
## then, elsewhere: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
tracking-server: install
	$(BIN)/python -m taxi_duration.tracking --dir team --host $(HOST) --port 5000

## the pipeline once as a Prefect flow: the four papermill steps as tasks, then the monitor on $(MONITOR)
flow: install
	$(BIN)/taxi-duration flow --train_data=$(TRAIN) --validation_data=$(VALIDATION) --model=$(MODEL) --monitor_data=$(MONITOR)

## past run months as the monthly schedule would have run them (month N: train N-2, validate and monitor N-1)
backfill: install
	$(BIN)/taxi-duration backfill --from $(FROM) --to $(TO) --model=$(MODEL)

## the README's test command: notebooks in sync and clean, notebook tests, pytest
test: install check-sync nbtest pytest

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
# 3 s gbm fit take 60 s. Two notebooks at a time (a third gained nothing: 63 s either way); three pytest workers,
# because a pytest worker often waits (a server starting, a pipeline's kernel): on 2 cores -n 3 took 6 min 42 s
# where -n 2 took 7 min 40 s right before it (and 6 min 14 s against 7 min 35 s an hour earlier).
nbtest pytest: export OMP_NUM_THREADS = 1

nbtest:
ifeq ($(words $(REAL_MONTHS)),3)
	$(BIN)/nbdev_test --n_workers 2
else
	@echo "nbtest: the real 2021 green months are not in $(TAXI_DATA_DIR): skipping the notebooks that read them ($(DATA_NBS)); put ../shared/data beside the checkout or set TAXI_DATA_DIR to run them"
	$(BIN)/nbdev_test --n_workers 2 --skip_file_re '^($(DATA_NBS))$$'
endif

pytest:
	$(BIN)/python -m pytest -q -n 3 --dist loadfile tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; fi; exit $$rc

## the notebooks as a website in _docs/ (open _docs/index.html): every notebook run, its outputs on its page
docs: export OMP_NUM_THREADS = 1
docs: install
	$(BIN)/python -m taxi_duration.docs --nbs nbs --dest _docs

## wall time per pipeline step on the real 2021-01/02 months
bench: install
	$(BIN)/python bench/pipeline.py

## the service against `mlflow models serve` under wrk (needs wrk and a champion)
bench-serve: install
	$(BIN)/python bench/serve.py

## cost of live monitoring: per call, and service throughput with and without
bench-monitor: install
	$(BIN)/python bench/monitor.py

clean:
	rm -rf $(VENV) mlflow.db mlruns runs monitoring *.egg-info
