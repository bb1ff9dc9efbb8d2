"""The Prefect flow for real, on Prefect's own temporary local server (no PREFECT_API_URL; nothing leaves the machine).

Each flow runs in a `taxi-duration` subprocess with its own MLflow SQLite store, the module's runs sharing one
PREFECT_HOME; we then read Prefect's store (its SQLite file) and MLflow's to check the links both ways.
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


def run_cli(tmp: Path, *args, home: Path|None=None, data_dir=None):
    "`taxi-duration ARGS` in `tmp` (its MLflow store there), Prefect's temporary server keeping its database in `home`."
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               PREFECT_HOME=str(home or tmp / 'prefect'), DO_NOT_TRACK='true', PREFECT_SERVER_ANALYTICS_ENABLED='false',
               MLFLOW_DISABLE_TELEMETRY='true', WHYLOGS_NO_ANALYTICS='1', MONITORING_DIR=str(tmp / 'monitoring'),
               TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable')
    env.pop('PREFECT_API_URL', None)
    if data_dir: env['TAXI_DATA_DIR'] = str(data_dir)
    return subprocess.run([sys.executable, '-c', MAIN, *args], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=900)


def prefect_db(home: Path):
    return sqlite3.connect(glob.glob(str(home / '*.db'))[0])


@pytest.fixture(scope='module')
def home(tmp_path_factory):
    """One PREFECT_HOME for the module's flow runs: the second temporary server finds its database made (a fresh
    one costs 5.6 CPU-s more, measured). The flow test reads Prefect's database as soon as its run ends; the
    backfill test picks its own run out by its `backfill` tag."""
    return tmp_path_factory.mktemp('prefect-home')


def mlflow_runs(tmp: Path):
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return c.search_runs([c.get_experiment_by_name('taxi-duration').experiment_id], "tags.pipeline = 'papermill'")


@pytest.fixture(scope='module')
def once(real_months, tmp_path_factory, home):
    "`taxi-duration flow` run once on 3,000 real rides per month (linear model, monitor on February)."
    tmp = tmp_path_factory.mktemp('flow')
    for m in ('01', '02'):
        month = pd.read_parquet(real_months / f'green_tripdata_2021-{m}.parquet')
        month.sample(3000, random_state=3).to_parquet(tmp / f'g{m}.parquet')
    r = run_cli(tmp, 'flow', f"--train_data={tmp / 'g01.parquet'}", f"--validation_data={tmp / 'g02.parquet'}",
                f"--monitor_data={tmp / 'g02.parquet'}", '--model=linear', home=home)
    seen = dict(flow_runs=[], tasks=[], artifacts=[], logs=[])
    if r.returncode == 0:
        with closing(prefect_db(home)) as db:  # read now: the backfill test adds its run to this database later
            seen = dict(flow_runs=[i for (i,) in db.execute('select id from flow_run')],
                        tasks=[n for (n,) in db.execute('select name from task_run')],
                        artifacts=[d for (d,) in db.execute("select data from artifact where key = 'mlflow-run'")],
                        logs=[m for (m,) in db.execute('select message from log')])
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


def test_backfill_tags_each_run_with_its_months(real_months, tmp_path, home):
    "backfill over one run month (2021-03: train 2021-01, validate 2021-02) on 3,000 real rides of each month."
    data = tmp_path / 'data'  # the months under their TLC names, as the cache holds them
    data.mkdir()
    for m in ('01', '02'):
        name = f'green_tripdata_2021-{m}.parquet'
        pd.read_parquet(real_months / name).sample(3000, random_state=4).to_parquet(data / name)
    r = run_cli(tmp_path, 'backfill', '--from', '2021-03', '--to', '2021-03', '--model', 'linear', '--no-monitor',
                home=home, data_dir=data)
    assert r.returncode == 0, r.stderr[-3000:]
    with closing(prefect_db(home)) as db:  # the flow test's run may be there too
        (tags,) = [t for t in (json.loads(t) for (t,) in db.execute('select tags from flow_run')) if 'backfill' in t]
    assert set(tags) == {'backfill', 'train:green:2021-01', 'validation:green:2021-02'}
    (run,) = mlflow_runs(tmp_path)
    assert (run.data.tags['train_data'], run.data.tags['validation_data'], run.data.tags['run_month']) == \
        ('green:2021-01', 'green:2021-02', '2021-03')


def test_backfill_refuses_months_the_tlc_lacks(tmp_path):
    "A run month whose training month the TLC never published: exit 2, one line naming both months."
    r = run_cli(tmp_path, 'backfill', '--from', '2013-08', '--to', '2013-10')
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith('taxi-duration: error: run month 2013-08')
    assert 'no green trip data for 2013-06' in r.stderr


def test_monthly_deployment_schedule():
    "The deployment runs monthly, on the 3rd at 06:00."
    from taxi_duration.flow import deployment
    (s,) = deployment().schedules
    assert s.schedule.cron == '0 6 3 * *'
