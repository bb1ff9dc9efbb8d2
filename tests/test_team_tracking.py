"""The team set-up for real: PostgreSQL 15 + `mlflow server --serve-artifacts`, clients over HTTP.

One PostgreSQL cluster and one MLflow server per module (private ports, temp folders), stopped always.
Small real data: 3,000 rides of each 2021 green month cut into temp parquet files.
"""
import os, shutil, subprocess, sys, tempfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from servers import free_port

pytestmark = pytest.mark.skipif(not shutil.which('initdb') or not shutil.which('pg_ctl'),
                                reason='PostgreSQL (initdb, pg_ctl) is not installed: .ci/run installs it')


def small_months(real_months: Path, folder: Path, n: int = 3000) -> dict:
    "`n` seeded rides of each real 2021 green month as parquet files in `folder`: {'01': path, '02': …, '03': …}."
    out = {}
    for m in ('01', '02', '03'):
        dst = folder / f'green_tripdata_2021-{m}.parquet'
        pd.read_parquet(real_months / dst.name).sample(n, random_state=1).to_parquet(dst)
        out[m] = str(dst)
    return out


def env_for(uri: str) -> dict:
    return dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY='true',
                DO_NOT_TRACK='true', WHYLOGS_NO_ANALYTICS='1', TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable')


MAIN = 'import sys; from taxi_duration.cli import main; sys.exit(main())'


def cli(*args, uri: str, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    "`taxi-duration ARGS` started in `cwd` against the tracking URI `uri`."
    return subprocess.Popen([sys.executable, '-c', MAIN, *args], env=env_for(uri), cwd=cwd, stdout=stdout,
                            stderr=stderr, text=True)


@pytest.fixture(scope='module')
def team(real_months, tmp_path_factory):
    "PostgreSQL + the MLflow server; yields dict(uri=http://..., backend=postgresql://..., artifacts=..., data=...)."
    from taxi_duration import tracking
    tmp = tmp_path_factory.mktemp('team')
    data = small_months(real_months, tmp)
    pg_root = Path(tempfile.mkdtemp(prefix='taxi-pg-'))  # pytest's folders are private to root; pgtest must reach it
    pg_root.chmod(0o755)
    pg = pg_root / 'data'
    backend = tracking.start_postgres(pg, free_port())
    srv = None
    try:
        port = free_port()
        srv = tracking.start_server(backend, tmp / 'artifacts', port, log=open(tmp / 'server.log', 'w'))
        yield dict(uri=f'http://127.0.0.1:{port}', backend=backend, artifacts=tmp / 'artifacts', data=data, tmp=tmp,
                   server=srv)
    finally:
        if srv: tracking.stop_server(srv)
        tracking.stop_postgres(pg)
        shutil.rmtree(pg_root, ignore_errors=True)


SERVED = [['--model=linear'], ['--model=ridge', '--alpha=30']]


@pytest.fixture(scope='module')
def at_once(team):
    """Three pipelines started at once: linear and ridge through the server, and a linear one straight on
    PostgreSQL (MLFLOW_TRACKING_URI=postgresql://..., its own experiment and model name, artifacts in ./mlruns of
    its folder), writing to the same database at the same time; their (returncode, stderr). Their output goes to
    files: a pipe nobody reads while another pipeline is waited for could fill and stall a lease holder."""
    data = [f"--train_data={team['data']['01']}", f"--validation_data={team['data']['02']}"]
    direct = team['tmp'] / 'direct'
    direct.mkdir()
    errs = [team['tmp'] / f'pipeline{i}.stderr' for i in range(len(SERVED) + 1)]
    args = [('pipeline', *data, *m) for m in SERVED]
    args.append(('pipeline', *data, '--model=linear', '--experiment=direct', '--model_name=direct-model'))
    uris, cwds = [team['uri']] * len(SERVED) + [team['backend']], [team['tmp']] * len(SERVED) + [direct]
    procs = []
    for a, uri, cwd, err in zip(args, uris, cwds, errs):
        with open(err, 'w') as f: procs.append(cli(*a, uri=uri, cwd=cwd, stdout=subprocess.DEVNULL, stderr=f))
    return [(p.wait(timeout=900), err.read_text()) for p, err in zip(procs, errs)]


def test_pipelines_at_once_all_finish(at_once):
    "Two pipelines through the server and one straight on PostgreSQL, started at once: all exit 0."
    assert [rc for rc, _ in at_once] == [0] * 3, '\n'.join(e[-3000:] for rc, e in at_once if rc)


def test_every_run_is_recorded_on_the_server(team, at_once):
    "Each pipeline through the server left one finished run there."
    from mlflow import MlflowClient
    c = MlflowClient(team['uri'])
    runs = c.search_runs([c.get_experiment_by_name('taxi-duration').experiment_id],
                         "tags.pipeline = 'papermill'", max_results=100)
    assert sum(r.info.status == 'FINISHED' for r in runs) == len(SERVED)


def test_champion_ends_on_the_best(team, at_once):
    "After concurrent promotions through the server, @champion is the version with the lowest validation RMSE."
    from mlflow import MlflowClient
    c = MlflowClient(team['uri'])
    versions = c.search_model_versions("name = 'taxi-duration'")
    best = min(versions, key=lambda v: float(v.tags['validation_rmse']))
    assert c.get_model_version_by_alias('taxi-duration', 'champion').version == best.version


def test_promotions_took_turns_and_left_no_lease(team, at_once):
    "Promotions through the server hold the registry lease `taxi-duration.lock.promotion` (core.registry_lease)."
    from mlflow import MlflowClient
    assert MlflowClient(team['uri']).search_registered_models("name LIKE 'taxi-duration.lock%'") == []


def test_artifacts_live_on_the_server(team, at_once):
    "Clients wrote no local mlruns/: the model files are in the server's artifact folder."
    assert not (team['tmp'] / 'mlruns').exists()
    assert any(team['artifacts'].rglob('MLmodel'))


def test_service_serves_and_follows_promotion(team, monkeypatch):
    "The service answers with the server's champion, and with the new one after the alias moves."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', team['uri'])
    from mlflow import MlflowClient
    from taxi_duration import serve, served
    c = MlflowClient(team['uri'])
    champ = c.get_model_version_by_alias('taxi-duration', 'champion').version
    app = serve.create_app(served.ServedModel(refresh_seconds=0))
    ride = {'PULocationID': 74, 'DOLocationID': 41, 'trip_distance': 2.5, 'pickup_datetime': '2021-03-01T08:00:00'}
    r = app.test_client().post('/predict', json=ride)
    assert r.status_code == 200, r.get_json()
    assert str(r.get_json()['model_version']) == champ
    other = next(v.version for v in c.search_model_versions("name = 'taxi-duration'") if v.version != champ)
    c.set_registered_model_alias('taxi-duration', 'champion', other)
    try:
        assert app.extensions['taxi_duration'].refresh()  # what the refresh thread does every REFRESH_SECONDS
        r = app.test_client().post('/predict', json=ride)
        assert str(r.get_json()['model_version']) == other, r.get_json()
    finally:
        c.set_registered_model_alias('taxi-duration', 'champion', champ)


def test_the_server_starts_no_genai_job_runners(team):
    "MLflow's job runner and its huey consumers stay off (tracking.start_server): the server is its uvicorn workers."
    group = subprocess.run(['ps', '-o', 'args=', '-g', str(team['server'].pid)], capture_output=True, text=True).stdout
    assert 'uvicorn' in group
    assert 'huey' not in group
    assert '_job_runner' not in group


def test_monitor_reads_reference_from_server(team):
    "The monitor finds the champion's reference profile through the server and gives a verdict."
    p = cli('monitor', f"--data={team['data']['03']}", '--report', str(team['tmp'] / 'report.html'),
            '--alerts-log', str(team['tmp'] / 'alerts.jsonl'), uri=team['uri'], cwd=team['tmp'])
    out, err = p.communicate(timeout=600)
    assert p.returncode in (0, 3), err[-2000:]
    assert 'reference run' in out
    assert 'verdict:' in out


def test_postgresql_uri_directly(team, at_once, monkeypatch):
    "MLFLOW_TRACKING_URI=postgresql://... without the server: a pipeline (one of the three), then batch scoring."
    assert at_once[-1][0] == 0, at_once[-1][1][-2000:]
    monkeypatch.setenv('MLFLOW_TRACKING_URI', team['backend'])
    monkeypatch.chdir(team['tmp'] / 'direct')  # the artifacts of a server-less store are in ./mlruns
    from taxi_duration import score
    out, info = score.score_data(team['data']['03'], 'models:/direct-model@champion')
    assert info.model_version == '1'
    assert len(out) > 2500


def test_the_lease_on_postgresql_survives_a_release_during_a_refused_create(team, monkeypatch):
    """Straight on PostgreSQL (MLflow's SQL store in this process): a create refused (UniqueViolation) while the holder
    releases comes back as 'does not exist'; the contender tries again and gets the lease."""
    from mlflow import MlflowClient
    from test_concurrency import refused_while_released
    assert refused_while_released(team['backend'], monkeypatch) == {'held': True}
    assert MlflowClient(team['backend']).search_registered_models("name LIKE 'taxi-duration.lock%'") == []
