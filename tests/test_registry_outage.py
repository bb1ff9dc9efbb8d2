"""The registry down or the local copy broken, tried through the real entry points (gunicorn, the CLI): the
service comes up from its last good copy, or exits in seconds with one line; a broken cached copy is fetched
again; the pipeline says in seconds that the tracking server does not answer."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import copy_store
from servers import free_port, start, stop

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}


def _env(tmp_path, **kw) -> dict:
    env = dict(os.environ, MODEL_CACHE_DIR=str(tmp_path / 'cache'), MONITORING='0', HOST='127.0.0.1',
               PORT=str(free_port()), PYTHONUNBUFFERED='1')
    for k in ('MODEL_URI', 'MLFLOW_HTTP_REQUEST_MAX_RETRIES', 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR',
              'MLFLOW_HTTP_REQUEST_TIMEOUT'): env.pop(k, None)  # the service's own bounds, as shipped
    env.update(kw)
    return env


def _nobody_listens() -> str:
    "A tracking URI on loopback where no server runs."
    return f'http://127.0.0.1:{free_port()}'


@pytest.fixture
def cached(small_registry, tmp_path, monkeypatch):
    "A model cache in tmp_path/cache holding the champion, as a service that ran once leaves it; the store's URI."
    from taxi_duration.served import DEFAULT_URI, load_served
    uri = copy_store(small_registry, tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    load_served(DEFAULT_URI, tmp_path / 'cache')
    return uri


def _gunicorn(env: dict, log: Path, wait: bool=True):
    with open(log, 'w') as out:
        return start([str(BIN / 'gunicorn'), 'app:app'], url=f"http://127.0.0.1:{env['PORT']}/health" if wait else None,
                     timeout=60, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_registry_down_at_start_serves_the_last_good_copy(cached, tmp_path):
    env = _env(tmp_path, MLFLOW_TRACKING_URI=_nobody_listens())
    proc = _gunicorn(env, tmp_path / 'gunicorn.log')
    try:
        url = f"http://127.0.0.1:{env['PORT']}"
        r = requests.post(url + '/predict', json=RIDE, timeout=5)
        assert r.status_code == 200
        assert r.json()['model_version'] == '1'
        assert requests.get(url + '/health', timeout=5).json()['status'] == 'degraded'
    finally:
        stop(proc)
    assert 'serving the last good local copy, version 1' in (tmp_path / 'gunicorn.log').read_text()


def test_registry_down_without_a_local_copy_exits_in_seconds_with_one_line(tmp_path):
    env = _env(tmp_path, MLFLOW_TRACKING_URI=_nobody_listens())
    t0 = time.monotonic()
    p = subprocess.run([str(BIN / 'gunicorn'), 'app:app'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - t0
    assert p.returncode == 4  # gunicorn: "App failed to load", no respawning
    assert seconds < 60, p.stderr[-2000:]  # MLflow's own retries took about four minutes
    ours = [l for l in p.stderr.splitlines() if l.startswith('taxi-duration serve: error:')]
    assert ours, p.stderr[-2000:]
    assert 'cannot look models:/taxi-duration@champion up in the registry at http://127.0.0.1:' in ours[0]
    assert 'Traceback' not in p.stderr


def test_a_broken_cached_copy_is_set_aside_and_fetched_again(cached, tmp_path):
    "The registry is fine but the cached copy is not (cut short on disk): the service fetches it again and says why."
    folder = next((tmp_path / 'cache').glob('models-taxi-duration-champion-*/v1'))
    model_file = next(folder.rglob('*.skops'))
    model_file.write_bytes(model_file.read_bytes()[:100])
    env = _env(tmp_path, MLFLOW_TRACKING_URI=cached)
    proc = _gunicorn(env, tmp_path / 'gunicorn.log')
    try:
        url = f"http://127.0.0.1:{env['PORT']}"
        assert requests.post(url + '/predict', json=RIDE, timeout=5).status_code == 200
        assert requests.get(url + '/health', timeout=5).json()['status'] == 'ok'
    finally:
        stop(proc)
    log = (tmp_path / 'gunicorn.log').read_text()
    refused = [l for l in log.splitlines() if 'the local copy of models:/taxi-duration/1 was refused' in l]
    assert refused, log[-3000:]
    assert 'fetching it again' in refused[0]
    assert list(folder.parent.glob('.refused-v1-*'))  # kept, to look at


def test_pipeline_against_a_tracking_server_that_does_not_answer_fails_in_seconds(real_months, tmp_path):
    env = _env(tmp_path, MLFLOW_TRACKING_URI=_nobody_listens(), TAXI_DATA_DIR=str(real_months))
    t0 = time.monotonic()
    p = subprocess.run([str(BIN / 'taxi-duration'), 'pipeline', '--train_data=green:2021-01',
                        '--validation_data=green:2021-02'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    assert p.returncode == 2, p.stderr[-2000:]
    assert seconds < 60, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr[-2000:]  # one line
    assert 'the tracking server http://127.0.0.1:' in p.stderr
