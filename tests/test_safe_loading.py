"""Loading a model never runs code from the registry.

A cloudpickle "model" whose unpickling writes a marker file is registered and given @champion;
through the real entry points — `taxi-duration score`, `registry.load_model`, gunicorn `app:app`
with two workers following the alias — it is refused, the marker never appears, and the service
keeps serving the good version. The hostile models are fitted on hand-made rows, so those tests run
on a fresh clone; the service test trains its good model on a slice of a real month (skipped, saying
why, without the real months).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import logged_models
from servers import free_port, start, stop
from conftest import ROOT
from taxi_duration.core import PICKLE_SWITCHES, TaxiDurationError, modified_env, pickle_switch

RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}


def hand_made_rides(n: int = 200):
    "A few hand-made rides (not TLC data) with a duration: enough to fit the attacker's toy models."
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    pickup = pd.Timestamp('2021-03-01') + pd.to_timedelta(rng.integers(0, 86400 * 28, n), unit='s')
    d = rng.uniform(0.5, 10, n)
    return pd.DataFrame({'PULocationID': rng.integers(1, 266, n), 'DOLocationID': rng.integers(1, 266, n),
                         'trip_distance': d, 'pickup_datetime': pickup, 'duration': 3 + 3 * d})


@pytest.fixture(scope='module')
def hostile(empty_store, tmp_path_factory):
    "A store with v1 cloudpickle evil (@evil, @champion) and v2 skops with a type we do not trust (@untrusted)."
    tmp = tmp_path_factory.mktemp('hostile')
    uri, marker = empty_store(tmp), tmp / 'PWNED'
    with modified_env(MLFLOW_TRACKING_URI=uri):
        evil = logged_models.register(logged_models.log_evil(marker), alias='evil')
        logged_models.move_alias(evil)
        untrusted = logged_models.register(logged_models.log_untrusted_skops(hand_made_rides()), alias='untrusted')
    assert not marker.exists()
    return dict(uri=uri, marker=marker, evil=evil, untrusted=untrusted, tmp=tmp)


@pytest.fixture(scope='module')
def store(real_months, empty_store, tmp_path_factory):
    "A store with v1 good (@champion, trained on a slice of a real month) and v2 cloudpickle evil (@evil)."
    tmp = tmp_path_factory.mktemp('safe')
    uri, marker = empty_store(tmp), tmp / 'PWNED'
    with modified_env(MLFLOW_TRACKING_URI=uri, TAXI_DATA_DIR=str(real_months)):
        good = logged_models.register(logged_models.log_good(logged_models.real_rides('01', 3000)))
        evil = logged_models.register(logged_models.log_evil(marker), alias='evil')
    assert not marker.exists()
    return dict(uri=uri, marker=marker, good=good, evil=evil, tmp=tmp)


def test_load_model_refuses_cloudpickle(hostile, monkeypatch):
    from taxi_duration.registry import load_model
    monkeypatch.setenv('MLFLOW_TRACKING_URI', hostile['uri'])
    with pytest.raises(TaxiDurationError, match="serialization format 'cloudpickle'"):
        load_model(f"models:/taxi-duration/{hostile['evil']}")
    with pytest.raises(TaxiDurationError, match='cloudpickle'):
        load_model('models:/taxi-duration@evil')
    assert not hostile['marker'].exists()


def test_load_model_refuses_types_the_project_does_not_trust(hostile, monkeypatch):
    "The MLmodel file vouches for `logged_models.own_type`; only train.SKOPS_TRUSTED counts."
    from taxi_duration.registry import load_model
    monkeypatch.setenv('MLFLOW_TRACKING_URI', hostile['uri'])
    with pytest.raises(TaxiDurationError, match='untrusted types in the skops file: logged_models.own_type'):
        load_model(f"models:/taxi-duration/{hostile['untrusted']}")


def test_load_model_loads_the_good_one_and_turns_mlflow_pickle_off(store, monkeypatch):
    from taxi_duration.registry import load_model
    monkeypatch.setenv('MLFLOW_TRACKING_URI', store['uri'])
    for v in PICKLE_SWITCHES: monkeypatch.delenv(v, raising=False)
    model = load_model('models:/taxi-duration@champion')
    assert model.predict([RIDE]).shape == (1,)
    assert os.environ[pickle_switch()] == 'false'
    # with the switch off, even MLflow's own loader refuses the evil model, without running it
    import mlflow
    with pytest.raises(Exception, match=pickle_switch()):
        mlflow.sklearn.load_model(f"models:/taxi-duration/{store['evil']}")
    assert not store['marker'].exists()


def test_load_model_refuses_a_code_path(tmp_path):
    "A model folder whose MLmodel names `code` is refused before anything else is read."
    from taxi_duration.registry import load_model
    folder = tmp_path / 'model'
    folder.mkdir()
    (folder / 'MLmodel').write_text('flavors:\n  sklearn:\n    code: code\n    pickled_model: model.skops\n'
                                    '    serialization_format: skops\n')
    (folder / 'code').mkdir()
    (folder / 'code' / 'evil.py').write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w')\n")
    with pytest.raises(TaxiDurationError, match='code paths'):
        load_model(str(folder))
    assert not (tmp_path / 'PWNED').exists()


def _cli(*args, env):
    exe = Path(sys.executable).parent / 'taxi-duration'
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def _env(store, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=store['uri'])
    for v in PICKLE_SWITCHES: env.pop(v, None)
    return dict(env, **kw)


def test_score_refuses_the_evil_champion_in_one_line(hostile, tmp_path):
    "`taxi-duration score` with @champion on the cloudpickle model: exit 2, one line, no code run."
    rides = tmp_path / 'rides.csv'
    hand_made_rides(20).drop(columns='duration').to_csv(rides, index=False)
    r = _cli('score', '--data', str(rides), '--output', str(tmp_path / 'out.parquet'),
             env=_env(hostile, TAXI_DATA_DIR=str(tmp_path)))
    store = hostile
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'refused to load' in lines[0], r.stderr
    assert 'cloudpickle' in lines[0], r.stderr
    assert not store['marker'].exists()
    assert not (tmp_path / 'out.parquet').exists()


def _version(port) -> str:
    import requests
    r = requests.post(f'http://127.0.0.1:{port}/predict', json=RIDE, timeout=5)
    assert r.status_code == 200, r.text
    return r.headers['X-Model-Version']


def test_gunicorn_keeps_serving_the_good_model_when_the_alias_moves_to_the_evil_one(store, tmp_path):
    import requests
    port = free_port()
    gunicorn = Path(sys.executable).parent / 'gunicorn'
    env = _env(store, MODEL_URI='models:/taxi-duration@champion', REFRESH_SECONDS='1', MONITORING='0')
    with open(tmp_path / 'gunicorn.log', 'w') as log:
        proc = start([str(gunicorn), '-b', f'127.0.0.1:{port}', 'app:app'], url=f'http://127.0.0.1:{port}/health',
                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        assert _version(port) == store['good']
        with modified_env(MLFLOW_TRACKING_URI=store['uri']): logged_models.move_alias(store['evil'])
        time.sleep(4)  # several refresh periods in both workers
        versions = {_version(port) for _ in range(20)}
        assert versions == {store['good']}
        assert proc.poll() is None
        assert not store['marker'].exists()
        assert 'refused to load' in (tmp_path / 'gunicorn.log').read_text()
    finally:
        with modified_env(MLFLOW_TRACKING_URI=store['uri']): logged_models.move_alias(store['good'])
        stop(proc)
