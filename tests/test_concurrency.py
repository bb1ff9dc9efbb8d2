"""Pipelines side by side, with real processes on one SQLite store, and the registry lease of server stores.

- Pipelines *started* at once on a new store all finish (its schema is created once, under a lock).
- Two registrations finishing at once never leave the worse model as champion: "read champion ->
  decide -> move alias" runs under a file lock; the test widens the race window on purpose.
Small real data (a few thousand rides cut from the real months, linear model) keeps it fast;
skipped, saying why, without the real months.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import logged_models
from conftest import ROOT, new_store
from servers import wait_until
from taxi_duration.core import modified_env

BIN = Path(sys.executable).parent


@pytest.fixture(scope='module')
def slices(real_months, tmp_path_factory):
    "Raw TLC rows cut from the real months into small parquet files: train slices of 2 sizes, one validation."
    tmp = tmp_path_factory.mktemp('slices')
    jan = pd.read_parquet(real_months / 'green_tripdata_2021-01.parquet')
    feb = pd.read_parquet(real_months / 'green_tripdata_2021-02.parquet')
    out = {}
    for n in (1500, 6000):
        out[n] = tmp / f'train-{n}.parquet'
        jan.iloc[:n].to_parquet(out[n], index=False)
    out['validation'] = tmp / 'validation.parquet'
    feb.iloc[:3000].to_parquet(out['validation'], index=False)
    return out


def _env(uri, **kw):
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=uri, PATH=path, **kw)


def test_pipelines_started_at_once_on_a_new_sqlite_store_all_finish(slices, tmp_path):
    """Two pipelines started at once on a store that does not exist yet: both finish, two versions, the better is
    champion, and the store stays usable afterwards (its schema is created once, under a lock)."""
    uri = new_store(tmp_path / 'store')
    assert not (tmp_path / 'store').exists()
    procs = []
    for n in (1500, 6000):  # output to files: an unread pipe could fill and stall a pipeline holding the lock
        with open(tmp_path / f'{n}.stderr', 'w') as err:
            procs.append(subprocess.Popen([str(BIN / 'taxi-duration'), 'pipeline', f'--train_data={slices[n]}',
                                           f"--validation_data={slices['validation']}", '--model=linear'],
                                          cwd=tmp_path, env=_env(uri), stdout=subprocess.DEVNULL, stderr=err))
    for n, p in zip((1500, 6000), procs):
        assert p.wait(timeout=600) == 0, (tmp_path / f'{n}.stderr').read_text()[-3000:]
    from mlflow import MlflowClient
    c = MlflowClient(uri)
    versions = c.search_model_versions("name='taxi-duration'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    rmse = {v.version: float(v.tags['validation_rmse']) for v in versions}
    champ = c.get_model_version_by_alias('taxi-duration', 'champion').version
    assert rmse[champ] == min(rmse.values())
    # the store stays usable (a crashed schema set-up can leave it unusable): a later run is tracked and registered
    import mlflow
    from taxi_duration.core import ensure_experiment
    with modified_env(MLFLOW_TRACKING_URI=uri):
        with mlflow.start_run(experiment_id=ensure_experiment()) as run: mlflow.log_metric('rmse', 1.0)
        c.create_registered_model('later', tags={'run_id': run.info.run_id})
    assert c.get_run(run.info.run_id).data.metrics == {'rmse': 1.0}
    assert c.get_registered_model('later').tags == {'run_id': run.info.run_id}


CHILD = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from taxi_duration import registry
    job = json.loads(Path(sys.argv[1]).read_text())
    real, delays = registry.champion, iter(job['delays'])
    def slow_champion(*a, **kw):
        v = real(*a, **kw)
        time.sleep(next(delays, 0))   # widen the window between reading the champion and moving the alias
        return v
    registry.champion = slow_champion
    if job.get('no_lock'):  # only to show the race exists without the lock (not used by the test)
        import contextlib
        registry.store_lock = lambda *a, **kw: contextlib.nullcontext()
    validation = pd.read_parquet(job['validation'])
    Path(job['ready']).touch()                 # imported, data read: waiting for the start signal
    while not Path(job['go']).exists(): time.sleep(0.01)
    out = registry.register(job['candidate'], validation, job['provenance'])
    print(json.dumps(dict(version=out.version, promoted=out.promoted, reason=out.reason)))
''')


def test_two_registrations_finishing_at_once_keep_the_better_champion(slices, empty_store, tmp_path):
    """The worse model reads "no champion" just before promoting and is slow to move the alias; the better one
    reads the champion meanwhile. Without the lock the worse one moves @champion last (TAXI_TEST_NO_LOCK=1 runs both
    without it, to show the race); with it, the better one waits, sees the worse champion, beats it and is promoted."""
    from taxi_duration.data import load
    from taxi_duration.registry import score
    from taxi_duration.train import metrics
    uri = empty_store(tmp_path / 'store')
    validation, vprov = load(slices['validation'])
    vpath = tmp_path / 'validation.parquet'
    validation.to_parquet(vpath)
    jobs = []
    with modified_env(MLFLOW_TRACKING_URI=uri):
        for n in (6000, 1500):  # more rides -> the better model
            train, tprov = load(slices[n])
            model_uri = logged_models.log_good(train)
            import mlflow
            run_id = mlflow.last_active_run().info.run_id
            rmse = metrics(validation.duration, score(model_uri, validation))['rmse']
            jobs.append(dict(candidate=dict(run_id=run_id, model_uri=model_uri, rmse=rmse, model='linear', alpha=None),
                             provenance=dict(train=tprov, validation=vprov), validation=str(vpath),
                             go=str(tmp_path / 'go'), ready=str(tmp_path / f'ready{len(jobs)}')))
    assert jobs[0]['candidate']['rmse'] < jobs[1]['candidate']['rmse']
    jobs[0]['delays'], jobs[1]['delays'] = [1.5, 0], [0, 3]
    jobs[0]['no_lock'] = jobs[1]['no_lock'] = bool(os.environ.get('TAXI_TEST_NO_LOCK'))
    procs, logs = [], [(tmp_path / f'job{i}.stdout', tmp_path / f'job{i}.stderr') for i in range(len(jobs))]
    for i, job in enumerate(jobs):
        (tmp_path / f'job{i}.json').write_text(json.dumps(job))
        with open(logs[i][0], 'w') as out, open(logs[i][1], 'w') as err:
            procs.append(subprocess.Popen([sys.executable, '-c', CHILD, str(tmp_path / f'job{i}.json')], cwd=tmp_path,
                                          env=_env(uri), stdout=out, stderr=err))
    def ready() -> bool:  # both imported and waiting (or one died: say why)
        assert [p.poll() for p in procs] == [None, None], [err.read_text()[-3000:] for _, err in logs]
        return all(Path(j['ready']).exists() for j in jobs)
    wait_until(ready, 'the two registrations to get ready', timeout=300, every=0.05)
    (tmp_path / 'go').touch()
    outs = []
    for p, (out, err) in zip(procs, logs):
        assert p.wait(timeout=300) == 0, err.read_text()[-3000:]
        outs.append(json.loads(out.read_text().strip().splitlines()[-1]))
    from mlflow import MlflowClient
    c = MlflowClient(uri)
    better = [v for v in c.search_model_versions("name='taxi-duration'")
              if v.run_id == jobs[0]['candidate']['run_id']][0]
    assert c.get_model_version_by_alias('taxi-duration', 'champion').version == better.version
    assert outs[0]['promoted'], outs


def _hold_write_lock(db: Path, seconds: float|None=None):
    """Hold SQLite's write lock on `db` in a thread (as a long transaction of another process would) for `seconds`,
    or until the returned event is set; returns (thread, event) once the lock is held."""
    import sqlite3
    import threading
    held, release = threading.Event(), threading.Event()

    def hold():
        con = sqlite3.connect(db, isolation_level=None)
        con.execute('BEGIN EXCLUSIVE')
        held.set()
        release.wait(seconds)
        con.execute('ROLLBACK'); con.close()
    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(60)
    return t, release



def test_a_registration_writes_both_aliases_while_it_holds_the_promotion_lock(slices, empty_store, tmp_path,
                                                                               monkeypatch):
    """@challenger and @champion are written under the promotion lock, so registrations finishing at once take turns:
    MLflow looks for an alias before inserting it, and two pipelines inserting @challenger together would collide
    (PostgreSQL refuses the second with a duplicate key on registered_model_alias_pk)."""
    from contextlib import contextmanager
    from taxi_duration import registry
    from taxi_duration.data import load
    from taxi_duration.train import metrics
    held, writes = [], []
    real_lock, real_client = registry.store_lock, registry.client

    @contextmanager
    def recording_lock(*args, **kwargs):
        with real_lock(*args, **kwargs):
            held.append(args[1:] or kwargs.get('what'))
            try: yield
            finally: held.pop()

    class RecordingClient:
        def __init__(self, client): self._client = client
        def __getattr__(self, name): return getattr(self._client, name)
        def set_registered_model_alias(self, name, alias, version):
            writes.append((alias, list(held)))
            return self._client.set_registered_model_alias(name, alias, version)

    monkeypatch.setattr(registry, 'store_lock', recording_lock)
    monkeypatch.setattr(registry, 'client', lambda: RecordingClient(real_client()))
    with modified_env(MLFLOW_TRACKING_URI=empty_store(tmp_path / 'store')):
        validation, vprov = load(slices['validation'])
        train, tprov = load(slices[1500])
        model_uri = logged_models.log_good(train)
        import mlflow
        candidate = dict(run_id=mlflow.last_active_run().info.run_id, model_uri=model_uri, model='linear', alpha=None,
                         rmse=metrics(validation.duration, registry.score(model_uri, validation))['rmse'])
        registry.register(candidate, validation, dict(train=tprov, validation=vprov))
    assert writes == [('challenger', [('promotion',)]), ('champion', [('promotion',)])]

def test_a_busy_store_is_retried_and_then_named_not_a_raw_sql_error(empty_store, tmp_path, monkeypatch):
    """A store locked for 8 s by another writer: the write waits and succeeds. Locked for good: the error says what
    to do (fewer pipelines at once, or a server store), not SQLite's 'database is locked'."""
    from taxi_duration import core
    from taxi_duration.core import TaxiDurationError, ensure_experiment, retry_busy
    uri = empty_store(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    ensure_experiment('first')                      # the store exists
    t, _ = _hold_write_lock(tmp_path / 'mlflow.db', 8)
    assert ensure_experiment('second')              # waited until the lock went away
    t.join()
    import sqlite3
    t, release = _hold_write_lock(tmp_path / 'mlflow.db')
    def write_now():  # a writer that does not wait: SQLite's own error
        sqlite3.connect(tmp_path / 'mlflow.db', timeout=0.05, isolation_level=None).execute('BEGIN IMMEDIATE')
    with pytest.raises(TaxiDurationError) as e:
        retry_busy(write_now, tries=2, wait=0)
    release.set()
    t.join()
    assert str(e.value) == core.BUSY_HINT
    assert 'mlflow server' in str(e.value)
    assert 'PostgreSQL' in str(e.value)


def test_the_registry_lease_is_held_by_one_client_at_a_time(empty_store, tmp_path):
    "Six clients contend for the registry lease on one store: each gets it, never two inside, nothing left behind."
    import threading
    from mlflow import MlflowClient
    from taxi_duration.core import registry_lease
    uri = empty_store(tmp_path)  # any store with a registry takes the lease the same way; the server is in test_team_tracking
    MlflowClient(uri).search_registered_models()
    inside, most, errors = [], [], []
    def contend():
        try:
            with registry_lease(uri, 'promotion'):
                inside.append(1); most.append(len(inside)); time.sleep(0.05); inside.pop()
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert errors == []
    assert len(most) == 6
    assert max(most) == 1
    assert MlflowClient(uri).search_registered_models() == []


def refused_while_released(uri: str, monkeypatch) -> dict:
    """A contender's create of the lease is refused while a client holds it; the holder releases before MLflow's SQL
    store re-reads the name to word its error (the store's own read is held back until then: the one interleaving
    that made a create fail with RESOURCE_DOES_NOT_EXIST). What the contender got: {'held': True} or {'error': e}."""
    import threading
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    from taxi_duration.core import registry_lease
    refused, released, got = threading.Event(), threading.Event(), {}
    read = SqlAlchemyStore.get_registered_model
    def read_after_release(self, name):
        if threading.current_thread().name == 'contender' and not refused.is_set():
            refused.set(); released.wait(60)
        return read(self, name)
    monkeypatch.setattr(SqlAlchemyStore, 'get_registered_model', read_after_release)
    def contend():
        try:
            with registry_lease(uri, 'race', wait=60): got['held'] = True
        except Exception as e: got['error'] = e
    contender = threading.Thread(target=contend, name='contender')
    with registry_lease(uri, 'race'):
        contender.start()
        assert refused.wait(60)  # its create was refused; MLflow is about to read the name again
    released.set()
    contender.join(120)
    return got


def test_a_contender_refused_while_the_holder_releases_gets_the_lease(empty_store, tmp_path, monkeypatch):
    """MLflow's SQL store (SQLite here, PostgreSQL in test_team_tracking) words a refused create by reading the
    model again; released in between, the create fails with 'does not exist' (an IntegrityError in its traceback).
    The contender takes that as "taken a moment ago", tries again and gets the lease."""
    from mlflow import MlflowClient
    uri = empty_store(tmp_path)
    MlflowClient(uri).search_registered_models()
    assert refused_while_released(uri, monkeypatch) == {'held': True}
    assert MlflowClient(uri).search_registered_models() == []


def test_a_lease_read_without_its_age_is_waited_for_not_broken(empty_store, tmp_path):
    """MLflow reads a model's tags in a second query: a lease read while it changes hands can come back without its
    `since` tag. Such a lease is never taken for a dead one (deleting it could let two clients in)."""
    from mlflow import MlflowClient
    from taxi_duration.core import TaxiDurationError, registry_lease
    uri = empty_store(tmp_path)
    c = MlflowClient(uri)
    c.create_registered_model('taxi-duration.lock.promotion')  # no tags, as such a read sees it
    with pytest.raises(TaxiDurationError, match='waited 0.5 s for the registry lease taxi-duration.lock.promotion'):
        with registry_lease(uri, 'promotion', wait=0.5): pass
    assert c.get_registered_model('taxi-duration.lock.promotion').tags == {}


def test_a_dataset_another_run_inserts_meanwhile_is_linked_not_an_error(empty_store, tmp_path, monkeypatch):
    """MLflow looks for a run's dataset, then inserts it: two pipelines on the same month at once can both miss it, and
    the second insert then breaks the store's unique key (on SQLite as on the team server's PostgreSQL). Here the other
    run's dataset is in the store while this run's look misses it, as in that race: the provenance is still logged and
    the run linked to the dataset, so neither pipeline fails."""
    import mlflow, sqlalchemy.orm
    from mlflow.store.tracking.dbmodels.models import SqlDataset
    from taxi_duration.core import ensure_experiment
    from taxi_duration.rides import RIDE_COLUMNS
    from taxi_duration.train import log_provenance
    uri = empty_store(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    frame = pd.DataFrame({'pickup_datetime': pd.to_datetime(['2021-01-04 08:00', '2021-01-04 09:00']),
                          'PULocationID': [74, 75], 'DOLocationID': [41, 42], 'trip_distance': [2.5, 1.0],
                          'duration': [12.0, 7.0]})[RIDE_COLUMNS + ['duration']]
    prov = {'train': dict(source='green:2021-01', sha256='a' * 64, path=str(tmp_path / 'month.parquet'), rows_raw=2,
                          rows_kept=2, sample=False)}
    experiment = ensure_experiment('race')
    with mlflow.start_run(experiment_id=experiment):  # the other pipeline, first to insert
        log_provenance(prov, {'train': frame})
    real_all, missed = sqlalchemy.orm.Query.all, []
    def look(query):  # this run's look for the dataset misses it once
        if not missed and query.column_descriptions[0]['entity'] is SqlDataset:
            missed.append(True)
            return []
        return real_all(query)
    monkeypatch.setattr(sqlalchemy.orm.Query, 'all', look)
    with mlflow.start_run(experiment_id=experiment) as run:
        log_provenance(prov, {'train': frame})
    assert missed == [True]
    [linked] = mlflow.MlflowClient(uri).get_run(run.info.run_id).inputs.dataset_inputs
    assert linked.dataset.name == 'green:2021-01'
