"""The Prefect flow for real, on Prefect's own temporary local server (no PREFECT_API_URL; nothing leaves the machine).

The flow runs once, through `taxi-duration backfill` over one run month, in a subprocess with its own MLflow SQLite
store and PREFECT_HOME; we then read Prefect's store (its SQLite file) and MLflow's to check the links both ways and
the months each run is tagged with.
"""
import glob, importlib.util, json, os, sqlite3, subprocess, sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec('prefect') is None,  # not imported: workers collect only
                                reason="prefect is not installed: pip install 'taxi-duration[team]'")
MAIN = 'import sys; from taxi_duration.cli import main; sys.exit(main())'


def run_cli(tmp: Path, *args, data_dir=None):
    "`taxi-duration ARGS` in `tmp`: its MLflow store there, Prefect's temporary server keeping its database in tmp/prefect."
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               PREFECT_HOME=str(tmp / 'prefect'), DO_NOT_TRACK='true', PREFECT_SERVER_ANALYTICS_ENABLED='false',
               MLFLOW_DISABLE_TELEMETRY='true', WHYLOGS_NO_ANALYTICS='1', MONITORING_DIR=str(tmp / 'monitoring'),
               TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable')
    env.pop('PREFECT_API_URL', None)
    if data_dir: env['TAXI_DATA_DIR'] = str(data_dir)
    return subprocess.run([sys.executable, '-c', MAIN, *args], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=900)


def prefect_db(home: Path):
    return sqlite3.connect(glob.glob(str(home / '*.db'))[0])


def mlflow_runs(tmp: Path):
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return c.search_runs([c.get_experiment_by_name('taxi-duration').experiment_id], "tags.pipeline = 'papermill'")


@pytest.fixture(scope='module')
def once(real_months, tmp_path_factory):
    """`taxi-duration backfill` over one run month, 2021-03: the flow once (train 2021-01, validate and monitor
    2021-02, linear model) on 3,000 real rides of each month, cached under their TLC names. What Prefect's database
    then holds: flow run ids, task names, the MLflow-run artifacts, log messages and each flow run's tags."""
    tmp = tmp_path_factory.mktemp('flow')
    data = tmp / 'data'
    data.mkdir()
    for m in ('01', '02'):
        name = f'green_tripdata_2021-{m}.parquet'
        pd.read_parquet(real_months / name).sample(3000, random_state=3).to_parquet(data / name)
    r = run_cli(tmp, 'backfill', '--from', '2021-03', '--to', '2021-03', '--model', 'linear', data_dir=data)
    seen = dict(flow_runs=[], tasks=[], artifacts=[], logs=[], tags=[])
    if r.returncode == 0:
        with closing(prefect_db(tmp / 'prefect')) as db:
            seen = dict(flow_runs=[i for (i,) in db.execute('select id from flow_run')],
                        tasks=[n for (n,) in db.execute('select name from task_run')],
                        artifacts=[d for (d,) in db.execute("select data from artifact where key = 'mlflow-run'")],
                        logs=[m for (m,) in db.execute('select message from log')],
                        tags=[json.loads(t) for (t,) in db.execute('select tags from flow_run')])
    return dict(tmp=tmp, r=r, **seen)


def test_flow_runs_once(once):
    "The flow (the four steps, then the monitor) exits 0 on Prefect's temporary local server."
    assert once['r'].returncode == 0, once['r'].stderr[-3000:]


def test_steps_are_prefect_tasks(once):
    "Each step and the monitor is a Prefect task of its own."
    names = {n.rsplit('-', 1)[0] for n in once['tasks']}
    assert names == {'01_data load & prepare', '02_features vectorise', '03_train train',
                     '04_registry evaluate & register', 'monitor'}


def test_mlflow_run_carries_prefect_flow_run_id(once):
    "The MLflow run is tagged with the Prefect flow run that made it."
    (fid,) = once['flow_runs']
    (run,) = mlflow_runs(once['tmp'])
    assert run.data.tags['prefect_flow_run_id'] == fid


def test_prefect_run_carries_mlflow_run_id(once):
    "The Prefect run names the MLflow run, in an artifact and in its log."
    (run,) = mlflow_runs(once['tmp'])
    (data,) = once['artifacts']
    assert run.info.run_id in json.loads(data)
    assert any(run.info.run_id in m for m in once['logs'])


def test_backfill_tags_the_flow_run_with_its_months(once):
    "The backfilled flow run carries the backfill tag and its months."
    (tags,) = once['tags']
    assert set(tags) == {'backfill', 'train:green:2021-01', 'validation:green:2021-02'}


def test_backfill_tags_the_mlflow_run_with_its_months(once):
    "The MLflow run records the months as specs and the run month."
    (run,) = mlflow_runs(once['tmp'])
    tags = run.data.tags
    assert tags['train_data'] == 'green:2021-01'
    assert tags['validation_data'] == 'green:2021-02'
    assert tags['run_month'] == '2021-03'


def test_backfill_refuses_months_the_tlc_lacks(tmp_path):
    "A run month whose training month the TLC never published: exit 2, one line naming both months."
    r = run_cli(tmp_path, 'backfill', '--from', '2013-08', '--to', '2013-10')
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith('taxi-duration: error: run month 2013-08')
    assert 'TLC does not publish green 2013-06' in r.stderr


def test_monthly_deployment_schedule():
    "The deployment runs monthly, on the 3rd at 06:00."
    from taxi_duration.flow import deployment
    (s,) = deployment().schedules
    assert s.schedule.cron == '0 6 3 * *'
