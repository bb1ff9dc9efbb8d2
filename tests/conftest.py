"""Shared fixtures: real data locations and throw-away MLflow stores.

Tests never touch the network and never write to the user's ./mlflow.db: every test that
needs MLflow gets its own SQLite store in a temp folder.
"""
import fcntl, os, pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / 'shared' / 'data'
FULL_MONTHS = [SHARED_DATA / f'green_tripdata_2021-0{m}.parquet' for m in (1, 2, 3)]


def have_real_months(n: int=3) -> bool:
    "Whether ../shared/data holds the first `n` real 2021 green months."
    return all(p.exists() for p in FULL_MONTHS[:n])


NO_DATA = (f'needs the real TLC months in {SHARED_DATA} (CI and developer machines have them; '
           'the repository carries no TLC data)')


@pytest.fixture(scope='session', autouse=True)
def _sample_dir(tmp_path_factory):
    """For the whole session (module fixtures included): `sample:` specs are drawn into a temp folder
    (never into the read-only shared data), and specs resolve to ../shared/data when it is there."""
    d = tmp_path_factory.mktemp('samples')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TAXI_SAMPLE_DIR', str(d))
        if have_real_months() and not os.environ.get('TAXI_DATA_DIR'): mp.setenv('TAXI_DATA_DIR', str(SHARED_DATA))
        yield d


@pytest.fixture(autouse=True)
def _no_network_no_telemetry(monkeypatch, _sample_dir, tmp_path_factory):
    """Every test: telemetry off, no TLC download (a spec that is not cached fails fast), specs resolve
    to ../shared/data when it is there, and `sample:` specs are drawn into a temp folder (never into
    the read-only shared data), and a private cache of served models."""
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')
    monkeypatch.setenv('DO_NOT_TRACK', 'true')
    monkeypatch.setenv('WHYLOGS_NO_ANALYTICS', '1')
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/unreachable')
    monkeypatch.setenv('TAXI_SAMPLE_DIR', str(_sample_dir))
    monkeypatch.setenv('MODEL_CACHE_DIR', str(tmp_path_factory.mktemp('model-cache')))
    if have_real_months() and not os.environ.get('TAXI_DATA_DIR'):
        monkeypatch.setenv('TAXI_DATA_DIR', str(SHARED_DATA))


@pytest.fixture
def real_months():
    "Skip the test, saying why, unless ../shared/data holds the real months."
    if not have_real_months(): pytest.skip(NO_DATA)
    return SHARED_DATA


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


def built_once(tmp_path_factory, name: str, build):
    """`build(folder)` once per test run. Alone, in a new temp folder; under pytest-xdist the first worker to
    get here builds in a folder all workers share, and the others wait for it (a file lock) and read its result."""
    if not os.environ.get('PYTEST_XDIST_WORKER'): return build(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / name  # this run's root: common to its workers
    folder.mkdir(exist_ok=True)
    with open(folder.with_suffix('.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / 'result.pickle'
        if done.exists(): return pickle.loads(done.read_bytes())
        result = build(folder)
        done.write_bytes(pickle.dumps(result))
        return result


def new_store(tmp: Path) -> str:
    return f'sqlite:///{tmp / "mlflow.db"}'


def copy_store(store: dict, dest: Path) -> str:
    """A private copy of a session store (`trained_store`, `small_registry`, …) in `dest`; its URI. SQLite's backup
    makes a consistent snapshot even while another worker writes to the store; the artifacts stay where they are
    (absolute paths), shared and only read."""
    import sqlite3
    with sqlite3.connect(store['tracking_uri'][len('sqlite:///'):]) as src, sqlite3.connect(dest / 'mlflow.db') as dst:
        src.backup(dst)
    return new_store(dest)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    "A fresh, empty MLflow tracking store for one test; its URI (also set in the environment)."
    uri = new_store(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope='session')
def trained_store(tmp_path_factory):
    """An MLflow store holding a champion trained once per session by the real pipeline on the full
    2021-01/02 months of ../shared/data; skipped (with the reason) where they are absent.
    Returns the pipeline's outcome as a dict plus 'tracking_uri' and 'full' (True)."""
    import dataclasses
    from taxi_duration.core import modified_env
    from taxi_duration.pipeline import run_pipeline
    if not have_real_months(2): pytest.skip(NO_DATA)

    def build(tmp):
        uri = new_store(tmp)
        with modified_env(MLFLOW_TRACKING_URI=uri, TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable',
                          TAXI_DATA_DIR=str(SHARED_DATA), TAXI_SAMPLE_DIR=str(tmp / 'samples')):
            res = run_pipeline('green:2021-01', 'green:2021-02', log=lambda s: None)
        return dict(dataclasses.asdict(res), tracking_uri=uri, full=True)
    return built_once(tmp_path_factory, 'trained', build)


@pytest.fixture(scope='session')
def small_model(tmp_path_factory):
    """A model pipeline fitted in-process in a few seconds by the pipeline's own functions on 20,000 real
    January rides, its interval calibrated on 10,000 February rides: what the HTTP tests serve."""
    if not have_real_months(): pytest.skip(NO_DATA)
    from taxi_duration.data import load
    from taxi_duration.features import featurize
    from taxi_duration.train import fit_candidate

    def build(_):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('TAXI_DATA_DIR', str(SHARED_DATA))
            feats = featurize(load('green:2021-01')[0].sample(20_000, random_state=0),
                              load('green:2021-02')[0].sample(10_000, random_state=0), 'zones_time')
            return fit_candidate(feats, 'gbm')[0]
    return built_once(tmp_path_factory, 'small-model', build)


@pytest.fixture(scope='session')
def small_registry(small_model, tmp_path_factory):
    """An MLflow store with `small_model` registered as version 1 of taxi-duration, alias champion.
    Returns dict(tracking_uri=..., version='1')."""
    import mlflow
    from taxi_duration.core import MODEL_NAME, ensure_experiment
    from taxi_duration.train import SKOPS_TRUSTED

    def build(tmp):
        uri = new_store(tmp)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('MLFLOW_TRACKING_URI', uri)
            mp.chdir(tmp)
            with mlflow.start_run(experiment_id=ensure_experiment()):
                info = mlflow.sklearn.log_model(small_model, name='model', serialization_format='skops',
                                                skops_trusted_types=SKOPS_TRUSTED, pip_requirements=['scikit-learn'])
            mv = mlflow.register_model(info.model_uri, MODEL_NAME)
            mlflow.MlflowClient(uri).set_registered_model_alias(MODEL_NAME, 'champion', mv.version)
        return dict(tracking_uri=uri, version=str(mv.version))
    return built_once(tmp_path_factory, 'registry', build)


@pytest.fixture(scope='module')
def champion_app(small_model):
    "The Flask app serving the small model as version '1' (no registry involved)."
    from taxi_duration import serve, served
    return serve.create_app(served.ServedModel.fixed(small_model, '1'))


@pytest.fixture
def champion_env(trained_store, monkeypatch):
    "The environment pointed at the session's trained store (MLFLOW_TRACKING_URI set)."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', trained_store['tracking_uri'])
    return trained_store
