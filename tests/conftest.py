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
def _no_network_no_telemetry(monkeypatch, tmp_path_factory):
    "Every test: telemetry off, no TLC download (a spec that is not cached fails fast), a private model cache."
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')
    monkeypatch.setenv('DO_NOT_TRACK', 'true')
    monkeypatch.setenv('WHYLOGS_NO_ANALYTICS', '1')
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/unreachable')
    monkeypatch.setenv('MODEL_CACHE_DIR', str(tmp_path_factory.mktemp('model-cache')))
    if not os.environ.get('TAXI_DATA_DIR') and all(p.exists() for p in FULL_MONTHS):
        monkeypatch.setenv('TAXI_DATA_DIR', str(SHARED_DATA))


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


def _skip_without_real_months():
    if not all(p.exists() for p in FULL_MONTHS):
        pytest.skip(f'the full real months are not in {SHARED_DATA} (CI and developer machines have them)')


@pytest.fixture(scope='session')
def small_model():
    """A model pipeline fitted in-process in a couple of seconds on 20,000 real January rides (the
    pipeline's own featuriser and estimator): what the HTTP tests serve. Skips without the real months."""
    _skip_without_real_months()
    from sklearn.pipeline import Pipeline
    from taxi_duration.data import load
    from taxi_duration.features import RIDE_COLUMNS, make_featurizer
    from taxi_duration.train import make_estimator
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TAXI_DATA_DIR', str(SHARED_DATA))
        jan, _ = load('green:2021-01')
    train = jan.sample(20_000, random_state=0)
    f = make_featurizer('zones_time')
    X = f.fit_transform(train[RIDE_COLUMNS], train.duration)
    return Pipeline(f.steps + [('model', make_estimator('gbm').fit(X, train.duration))])


@pytest.fixture(scope='session')
def small_registry(small_model, tmp_path_factory):
    """An MLflow store with `small_model` registered as version 1 of taxi-duration, alias champion.
    Returns dict(tracking_uri=..., version='1')."""
    import mlflow
    from taxi_duration.core import MODEL_NAME, ensure_experiment
    from taxi_duration.train import SKOPS_TRUSTED
    uri = new_store(tmp_path_factory.mktemp('registry'))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MLFLOW_TRACKING_URI', uri)
        with mlflow.start_run(experiment_id=ensure_experiment()):
            info = mlflow.sklearn.log_model(small_model, name='model', serialization_format='skops',
                                            skops_trusted_types=SKOPS_TRUSTED, pip_requirements=['scikit-learn'])
        mv = mlflow.register_model(info.model_uri, MODEL_NAME)
        mlflow.MlflowClient(uri).set_registered_model_alias(MODEL_NAME, 'champion', mv.version)
    return dict(tracking_uri=uri, version=str(mv.version))


@pytest.fixture(scope='module')
def champion_app(small_model):
    "The Flask app serving the small model as version '1' (no registry involved)."
    from taxi_duration import serve
    return serve.create_app(serve.Pinned(small_model, '1'))


@pytest.fixture
def champion_env(trained_store, monkeypatch):
    "The environment pointed at the session's trained store (MLFLOW_TRACKING_URI set)."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', trained_store['tracking_uri'])
    return trained_store
