"""Fixtures of the monitoring tests (a plugin, so that the session fixtures exist once however many test
modules use them): the real months, seeded samples of them, and the session's champion with its reference."""
from pathlib import Path

import pandas as pd
import pytest

from taxi_duration.reference import load_reference, log_reference
from taxi_duration.rides import RIDE_COLUMNS
from taxi_duration.data import read_trips

from conftest import DATA_DIR, NO_DATA, copy_store


def month_file(m: str) -> Path:
    "The real green month 2021-`m` in conftest's DATA_DIR; skip (saying why, as `real_months` does) where it is absent."
    path = DATA_DIR / f'green_tripdata_2021-{m}.parquet'
    if not path.exists(): pytest.skip(NO_DATA)
    return path


def sample_file(m: str, tmp: Path, n: int=4000, seed: int=0) -> Path:
    "A seeded sample of `n` raw rows of the real month, written to `tmp` (as data.make_sample draws it)."
    dest = tmp / f'green_tripdata_2021-{m}.sample-{n}-{seed}.parquet'
    if not dest.exists():
        pd.read_parquet(month_file(m)).sample(n=n, random_state=seed).sort_index().to_parquet(dest, index=False)
    return dest


def in_process_champion(n_train: int|None=None, seed: int=0) -> dict:
    """The pipeline's gbm fitted once, in process, on January (all of it, or a seeded sample of `n_train`
    rides), logged with its reference on all of February, registered and promoted in the store
    MLFLOW_TRACKING_URI names; the registry's outcome. The same library calls as the pipeline's steps, without
    papermill or a second fit: for tests that need a champion of their own (the session's is `monitored_store`,
    the pipeline's own champion on all of January, the kind of model the thresholds of nbs/09_verdicts.ipynb were measured for)."""
    import mlflow
    from taxi_duration.core import ensure_experiment, tracking_uri
    from taxi_duration.data import load
    from taxi_duration.registry import register
    from taxi_duration.features import featurize
    from taxi_duration.train import fit_candidate, log_candidate, log_provenance
    (jan, jan_prov), (feb, feb_prov) = (load(str(month_file(m)), progress=False) for m in ('01', '02'))
    if n_train: jan = jan.sample(min(n_train, len(jan)), random_state=seed)
    prov, frames = {'train': jan_prov, 'validation': feb_prov}, {'train': jan, 'validation': feb}
    tracking_uri()
    mlflow.set_experiment(experiment_id=ensure_experiment('monitor-tests'))
    feats = featurize(jan, feb, 'zones_time')
    with mlflow.start_run() as run:
        log_provenance(prov, frames)
        pipe, m, pred = fit_candidate(feats, 'gbm')
        uri = log_candidate(pipe, m, feats['y_validation'], pred, feb[RIDE_COLUMNS].head(5), 'gbm', 0.0)
    cand = dict(run_id=run.info.run_id, model_uri=uri, model='gbm', alpha=0.0, **m)
    log_reference(cand['run_id'], jan, feb, pred, {k: m[k] for k in ('rmse', 'mae', 'r2')})
    return register(cand, feb, prov, predictions=pred)


@pytest.fixture(scope='session')
def monitored_store(trained_store, real_months, tmp_path_factory):
    """A private store holding the session's champion: the pipeline's gbm on all of January, with its reference
    logged on all of February (`conftest.trained_store`, trained once per run). A consistent snapshot of that
    store (`conftest.copy_store`), so what these tests log stays here."""
    return dict(trained_store, tracking_uri=copy_store(trained_store, tmp_path_factory.mktemp('monitored')))


def run_cli(*argv) -> int:
    "`taxi-duration monitor ARGV` through the project's CLI, in process; the exit code."
    from taxi_duration import cli
    return cli.main(['monitor', *argv])


@pytest.fixture
def env(monitored_store, monkeypatch, tmp_path):
    "The session champion's registry, the real data folder, a clean monitoring dir and no webhook."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', monitored_store['tracking_uri'])
    monkeypatch.setenv('TAXI_DATA_DIR', str(DATA_DIR))
    monkeypatch.setenv('MONITORING_DIR', str(tmp_path / 'monitoring'))
    monkeypatch.delenv('ALERT_WEBHOOK_URL', raising=False)
    return monitored_store


@pytest.fixture(scope='session')
def _reference(monitored_store):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MLFLOW_TRACKING_URI', monitored_store['tracking_uri'])
        return load_reference()


@pytest.fixture
def reference(env, _reference):
    return _reference


@pytest.fixture(scope='session')
def _model(monitored_store, _reference):
    from taxi_duration.registry import load_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MLFLOW_TRACKING_URI', monitored_store['tracking_uri'])
        return load_model(_reference.model_uri)


@pytest.fixture
def model(env, _model):
    "The champion's pipeline, loaded once per session (monitor_data would load it from the registry each call)."
    return _model


def month(env, m: str) -> str:
    return f'green:2021-{m}'


@pytest.fixture(scope='session')
def _raw_march():
    return read_trips(month_file('03'))


@pytest.fixture
def raw_march(_raw_march):
    return _raw_march.copy()


@pytest.fixture(scope='session')
def _march_sample(_raw_march):
    return _raw_march.sample(20_000, random_state=0).sort_values('pickup_datetime', kind='stable').reset_index(drop=True)


@pytest.fixture
def march_sample(_march_sample):
    """20,000 of March's raw rows (seeded, in time order): what a breakage test breaks. A breakage moves its statistic
    far beyond the thresholds on a sample too, for a quarter of the cost of the month."""
    return _march_sample.copy()
