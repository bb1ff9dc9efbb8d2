"""Shared fixtures: real data locations and throw-away MLflow stores.

Tests never touch the network and never write to the user's ./mlflow.db: every test that
needs MLflow gets its own SQLite store in a temp folder.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / 'shared' / 'data'
FULL_MONTHS = [SHARED_DATA / f'green_tripdata_2021-0{m}.parquet' for m in (1, 2, 3)]


@pytest.fixture(autouse=True)
def _no_network_no_telemetry(monkeypatch):
    "Every test: telemetry off, and no TLC download (a spec that is not cached fails fast)."
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')
    monkeypatch.setenv('DO_NOT_TRACK', 'true')
    monkeypatch.setenv('WHYLOGS_NO_ANALYTICS', '1')
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/unreachable')


@pytest.fixture(scope='module', autouse=True)
def _restore_threads():
    "serve.create_app limits the process to one OpenMP thread: give each test module its threads back."
    from threadpoolctl import threadpool_info, threadpool_limits
    before = threadpool_info()
    yield
    threadpool_limits(before)


@pytest.fixture
def full_data_dir():
    "The folder with the real full 2021 green months (../shared/data); skip where it is absent."
    if not all(p.exists() for p in FULL_MONTHS):
        pytest.skip(f'the full real months are not in {SHARED_DATA} (CI and developer machines have them)')
    return SHARED_DATA


def new_store(tmp: Path) -> str:
    return f'sqlite:///{tmp / "mlflow.db"}'


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    "A fresh, empty MLflow tracking store for one test; its URI (also set in the environment)."
    uri = new_store(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope='session')
def trained_store(tmp_path_factory):
    """An MLflow store holding a champion trained once per session by the real pipeline:
    on the full 2021-01/02 months when ../shared/data has them, else on the shipped samples.
    Returns the pipeline's outcome dict plus 'tracking_uri' and 'full' (bool)."""
    from taxi_duration.pipeline import run_pipeline
    tmp = tmp_path_factory.mktemp('trained')
    uri = new_store(tmp)
    full = all(p.exists() for p in FULL_MONTHS[:2])
    old = {k: os.environ.get(k) for k in ('MLFLOW_TRACKING_URI', 'TAXI_DATA_DIR', 'TAXI_TLC_BASE_URL')}
    os.environ['MLFLOW_TRACKING_URI'] = uri
    os.environ['TAXI_TLC_BASE_URL'] = 'http://127.0.0.1:9/unreachable'
    if full: os.environ['TAXI_DATA_DIR'] = str(SHARED_DATA)
    try:
        spec = (lambda m: f'green:2021-{m}') if full else (lambda m: f'sample:green:2021-{m}')
        res = run_pipeline(spec('01'), spec('02'), log=lambda s: None)
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return dict(res, tracking_uri=uri, full=full)


@pytest.fixture(scope='module')
def champion_app(trained_store):
    "The Flask app serving the session's champion (built with MLFLOW_TRACKING_URI pointed at its store)."
    from taxi_duration import serve
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MLFLOW_TRACKING_URI', trained_store['tracking_uri'])
        return serve.create_app(refresh_seconds=0)


@pytest.fixture
def champion_env(trained_store, monkeypatch):
    "The environment pointed at the session's trained store (MLFLOW_TRACKING_URI set)."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', trained_store['tracking_uri'])
    return trained_store
