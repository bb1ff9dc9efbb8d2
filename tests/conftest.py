"""Shared fixtures: where the real months are, throw-away MLflow stores, and models trained once per run.

Tests never touch the network but loopback, never read what the user set for their own work (USER_SETTINGS: a
TLC mirror, a tracking server, …) and never write to the user's ./mlflow.db: every test that needs MLflow gets
its own SQLite store in a temp folder. A test that needs the real TLC months asks for the `real_months` fixture
(the folder holding them) and is skipped, saying where they were looked for, without them.
"""
import fcntl, os, pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a user may have set for their own work (a mirror, a tracking server, a model, folders): no test reads it.
USER_SETTINGS = ('TAXI_TLC_BASE_URL', 'TAXI_SAMPLE_DIR', 'TAXI_DURATION_NBS', 'MLFLOW_TRACKING_URI', 'MLFLOW_REGISTRY_URI',
                 'MODEL_URI', 'MODEL_CACHE_DIR', 'MONITORING_DIR', 'REFRESH_SECONDS', 'ALERT_WEBHOOK_URL', 'HOST', 'PORT')
# What an outer `make` hands down to the commands it runs: a make a test starts (`make clean` in a scratch folder)
# must not inherit the outer command line, or `make test VENV=~/venvs/td` would hand it that VENV to delete. make
# puts a command line's variables in the environment too (and their names in MAKEFLAGS, after ' -- ').
MAKE_SETTINGS = ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES')


def outer_make_variables(environ=os.environ) -> tuple:
    "The names of the variables set on an outer make's command line (`make test VENV=...` gives ('VENV',))."
    assigns = environ.get('MAKEFLAGS', '').partition(' -- ')[2]
    return tuple(a.split('=', 1)[0] for a in assigns.split() if '=' in a)


def project_data_dir(root: Path=ROOT, environ=os.environ) -> Path:
    """Where the project finds the TLC months, as the Makefile decides: `$TAXI_DATA_DIR`, else ../shared/data beside
    the checkout when it holds 2021-01 (CI, the developers), else ./data (where `make run` downloads them)."""
    if environ.get('TAXI_DATA_DIR'): return Path(environ['TAXI_DATA_DIR']).resolve()
    shared = root.parent / 'shared' / 'data'
    return shared if (shared / 'green_tripdata_2021-01.parquet').exists() else root / 'data'


DATA_DIR = project_data_dir()
REAL_MONTHS = [DATA_DIR / f'green_tripdata_2021-0{m}.parquet' for m in (1, 2, 3)]
NO_DATA = (f'needs the real 2021-01, -02 and -03 green months in {DATA_DIR} (`make run` downloads them there; '
           'or set TAXI_DATA_DIR; the repository carries no TLC data)')


@pytest.fixture(scope='session')
def real_months() -> Path:
    """The folder holding the real 2021 green months; the test is skipped, saying why, where they are absent.
    The one way to ask: as an argument, or `pytest.mark.usefixtures('real_months')` (a whole module: `pytestmark`)."""
    if not all(p.exists() for p in REAL_MONTHS): pytest.skip(NO_DATA)
    return DATA_DIR


@pytest.fixture(scope='session', autouse=True)
def _sample_dir(tmp_path_factory):
    """For the whole session (module fixtures included): none of the user's own settings nor an outer make's, specs
    resolve to DATA_DIR, and `sample:` specs are drawn into a temp folder (never into a read-only data folder)."""
    d = tmp_path_factory.mktemp('samples')
    with pytest.MonkeyPatch.context() as mp:
        for name in USER_SETTINGS + MAKE_SETTINGS + outer_make_variables(): mp.delenv(name, raising=False)
        mp.setenv('TAXI_SAMPLE_DIR', str(d))
        mp.setenv('TAXI_DATA_DIR', str(DATA_DIR))
        yield d


@pytest.fixture(autouse=True)
def _no_network_no_telemetry(monkeypatch, _sample_dir, tmp_path_factory):
    """Every test: telemetry off, no TLC download (a spec that is not cached fails fast), specs resolve to
    DATA_DIR, `sample:` specs are drawn into a temp folder, and a private cache of served models."""
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')
    monkeypatch.setenv('DO_NOT_TRACK', 'true')
    monkeypatch.setenv('WHYLOGS_NO_ANALYTICS', '1')
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/unreachable')
    monkeypatch.setenv('TAXI_SAMPLE_DIR', str(_sample_dir))
    monkeypatch.setenv('TAXI_DATA_DIR', str(DATA_DIR))
    monkeypatch.setenv('MODEL_CACHE_DIR', str(tmp_path_factory.mktemp('model-cache')))


@pytest.fixture(scope='module', autouse=True)
def _restore_threads():
    "serve.create_app limits the process to one OpenMP thread: give each test module its threads back."
    from threadpoolctl import threadpool_info, threadpool_limits
    before = threadpool_info()
    yield
    threadpool_limits(before)


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
    "The URI of a SQLite store in `tmp` that does not exist yet: the first MLflow client to open it creates it."
    return f'sqlite:///{tmp / "mlflow.db"}'


@pytest.fixture(scope='session')
def empty_store(tmp_path_factory):
    """`empty_store(folder)`: a new, empty SQLite store in `folder`, as MLflow creates it; its URI. MLflow's schema
    migrations take about a CPU-second for every new store, so the run creates one once and each test gets a copy
    (its Default experiment's artifacts in `folder`, where MLflow would have put them). A test of creating a store
    uses `new_store`."""
    import sqlite3

    def build(tmp):
        from mlflow import MlflowClient
        MlflowClient(new_store(tmp)).search_experiments()
        return str(tmp / 'mlflow.db')
    template = built_once(tmp_path_factory, 'empty-store', build)

    def make(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(template) as src, sqlite3.connect(folder / 'mlflow.db') as dst:
            src.backup(dst)
            dst.execute('UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0',
                        (str(folder / 'mlruns' / '0'),))
        return new_store(folder)
    return make


def copy_store(store: dict, dest: Path) -> str:
    """A private copy of a session store (`trained_store`, `small_registry`, …) in `dest`; its URI. SQLite's backup
    makes a consistent snapshot even while another worker writes to the store; the artifacts stay where they are
    (absolute paths), shared and only read."""
    import sqlite3
    with sqlite3.connect(store['tracking_uri'][len('sqlite:///'):]) as src, sqlite3.connect(dest / 'mlflow.db') as dst:
        src.backup(dst)
    return new_store(dest)


@pytest.fixture
def tracking(empty_store, tmp_path, monkeypatch):
    "A fresh, empty MLflow tracking store for one test; its URI (also set in the environment)."
    uri = empty_store(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope='session')
def trained_store(real_months, empty_store, tmp_path_factory):
    """An MLflow store holding a champion trained once per session by the real pipeline on the full
    2021-01/02 months; skipped (with the reason) where they are absent.
    Returns the pipeline's outcome as a dict plus 'tracking_uri' and 'full' (True)."""
    import dataclasses
    from taxi_duration.core import modified_env
    from taxi_duration.pipeline import run_pipeline

    def build(tmp):
        uri = empty_store(tmp)
        with modified_env(MLFLOW_TRACKING_URI=uri, TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable',
                          TAXI_DATA_DIR=str(real_months), TAXI_SAMPLE_DIR=str(tmp / 'samples')):
            res = run_pipeline('green:2021-01', 'green:2021-02', log=lambda s: None)
        return dict(dataclasses.asdict(res), tracking_uri=uri, full=True)
    return built_once(tmp_path_factory, 'trained', build)


@pytest.fixture(scope='session')
def small_model(real_months, tmp_path_factory):
    """A model pipeline fitted in-process in a few seconds by the pipeline's own functions on 8,000 real
    January rides, its interval calibrated on 4,000 February rides: what the HTTP tests serve."""
    from taxi_duration.data import load
    from taxi_duration.features import featurize
    from taxi_duration.train import fit_candidate

    def build(_):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('TAXI_DATA_DIR', str(real_months))
            feats = featurize(load('green:2021-01')[0].sample(8_000, random_state=0),
                              load('green:2021-02')[0].sample(4_000, random_state=0), 'zones_time')
            return fit_candidate(feats, 'gbm')[0]
    return built_once(tmp_path_factory, 'small-model', build)


@pytest.fixture(scope='session')
def small_registry(small_model, empty_store, tmp_path_factory):
    """An MLflow store with `small_model` registered as version 1 of taxi-duration, alias champion.
    Returns dict(tracking_uri=..., version='1')."""
    import mlflow
    from taxi_duration.core import MODEL_NAME, ensure_experiment
    from taxi_duration.train import SKOPS_TRUSTED

    def build(tmp):
        uri = empty_store(tmp)
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
