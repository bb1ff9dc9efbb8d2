"""The web service: answers, every kind of bad request, health, following the alias, and the shells
(`python app.py`, gunicorn) as real processes on loopback."""
import datetime as dt
import json
import logging
import os
import tempfile
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import copy_store
from servers import free_port, start, stop
from taxi_duration import serve, served
from taxi_duration.rides import MAX_TRIP_MILES, now_nyc
from taxi_duration.core import MODEL_NAME, TaxiDurationError

ROOT = Path(__file__).resolve().parent.parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}


@pytest.fixture(scope='module')
def app(champion_app):
    return champion_app


@pytest.fixture
def client(app):
    return app.test_client()


# --- answers ---------------------------------------------------------------------------------

def test_one_ride(client):
    r = client.post('/predict', json=dict(RIDE, ride_id='abc-1'))
    assert r.status_code == 200, r.json
    a = r.json
    assert a['model_version'] == '1'
    assert r.headers['X-Model-Version'] == '1'
    assert a['ride_id'] == 'abc-1'
    assert a['pickup_datetime'] == '2021-03-05T08:30:00'
    assert isinstance(a['duration'], float)
    assert 1 <= a['duration'] <= 60
    lo, hi = a['interval']
    assert lo >= 0
    assert lo < a['duration'] < hi
    assert a['used_distance'] is True


@pytest.mark.parametrize('ride', [{'PULocationID': 43, 'DOLocationID': 151},
                                  {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': None},
                                  {'PULocationID': 1, 'DOLocationID': 1, 'pickup_datetime': '2021-03-05T08:30:00'}])
def test_zones_alone_are_answered(client, ride):
    "The rider's question: pick-up and drop-off alone get minutes and a range, saying the distance was not used."
    r = client.post('/predict', json=ride)
    assert r.status_code == 200, r.json
    a = r.json
    assert a['used_distance'] is False
    lo, hi = a['interval']
    assert lo >= 0
    assert lo < a['duration'] < hi


def test_list_same_order_as_batch(client, small_model):
    "A list is answered in order, with the same numbers the batch path gives (one feature path)."
    from taxi_duration.data import load
    df, _ = load('green:2021-03')
    df = df[df.trip_distance <= MAX_TRIP_MILES].head(300)
    rides = [dict(PULocationID=int(a), DOLocationID=int(b), trip_distance=float(d), pickup_datetime=t.isoformat(), ride_id=i)
             for i, (a, b, d, t) in enumerate(df[['PULocationID', 'DOLocationID', 'trip_distance', 'pickup_datetime']].itertuples(index=False))]
    r = client.post('/predict', json=rides)
    assert r.status_code == 200
    assert [a['ride_id'] for a in r.json] == list(range(len(rides)))
    # the raw logged pipeline; the service walks the same trees in C++
    batch = small_model.predict(df[['PULocationID', 'DOLocationID', 'trip_distance', 'pickup_datetime']])
    np.testing.assert_allclose([a['duration'] for a in r.json], batch, rtol=1e-12)


def test_pickup_defaults_to_now_in_new_york(client):
    before = now_nyc()
    r = client.post('/predict', json={k: v for k, v in RIDE.items() if k != 'pickup_datetime'})
    assert r.status_code == 200
    t = dt.datetime.fromisoformat(r.json['pickup_datetime'])
    assert before <= t <= now_nyc()
    assert client.post('/predict', json=dict(RIDE, pickup_datetime=None)).status_code == 200


def test_offsets_are_converted_to_new_york_time(client):
    a = client.post('/predict', json=dict(RIDE, pickup_datetime='2021-03-05T13:30:00Z')).json
    b = client.post('/predict', json=RIDE).json
    assert a['pickup_datetime'] == '2021-03-05T08:30:00'
    assert a['duration'] == b['duration']


def test_max_rides(client):
    r = client.post('/predict', json=[RIDE] * serve.MAX_RIDES)
    assert r.status_code == 200
    assert len(r.json) == serve.MAX_RIDES
    r = client.post('/predict', json=[RIDE] * (serve.MAX_RIDES + 1))
    assert r.status_code == 400
    assert f'1 to {serve.MAX_RIDES} rides' in r.json['error']


def test_extra_fields_are_ignored(client):
    assert client.post('/predict', json=dict(RIDE, passenger_count=2)).status_code == 200


# --- bad requests: 4xx, JSON, naming the field ------------------------------------------------

def _raw(body: bytes, content_type='application/json'):
    return dict(data=body, content_type=content_type)

BAD = {
    'empty body': (_raw(b''), 400, 'empty body'),
    'blank body': (_raw(b'  \n'), 400, 'empty body'),
    'not JSON': (_raw(b'{"PULocationID": 43,'), 400, 'not valid JSON'),
    'not UTF-8': (_raw(b'\xff\xfe\xfa'), 400, 'not valid JSON'),
    'NaN literal': (_raw(b'{"PULocationID": 43, "DOLocationID": 151, "trip_distance": NaN}'), 400, 'trip_distance must be a finite'),
    'Infinity literal': (_raw(b'{"PULocationID": 43, "DOLocationID": 151, "trip_distance": -Infinity}'), 400, 'trip_distance must be a finite'),
    'huge number': (_raw(b'{"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1e999}'), 400, 'trip_distance must be a finite'),
    'huge integer': (_raw(b'{"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1' + b'0' * 400 + b'}'), 400, 'trip_distance must be between'),
    'too many digits': (_raw(b'{"PULocationID": 1' + b'0' * 5000 + b'}'), 400, 'not valid JSON'),
    'text/plain': (_raw(json.dumps(RIDE).encode(), 'text/plain'), 415, 'Content-Type: application/json'),
    'form': (dict(data={'PULocationID': '43'}), 415, 'Content-Type: application/json'),
    'no content type': (_raw(json.dumps(RIDE).encode(), None), 415, 'Content-Type: application/json'),
    'scalar': (dict(json=42), 400, 'a JSON object (one ride) or a list'),
    'string': (dict(json='ride'), 400, 'a JSON object (one ride) or a list'),
    'null': (_raw(b'null'), 400, 'a JSON object (one ride) or a list'),
    'empty object': (dict(json={}), 400, 'missing fields PULocationID, DOLocationID'),
    'missing DO': (dict(json={'PULocationID': 43, 'trip_distance': 1}), 400, 'missing field DOLocationID'),
    'empty list': (dict(json=[]), 400, 'a list must hold 1 to'),
    'list of lists': (dict(json=[[43, 151, 1.0]]), 400, 'ride 0: a ride must be a JSON object'),
    'one bad ride': (dict(json=[RIDE, RIDE, dict(RIDE, DOLocationID=999)]), 400, 'ride 2: DOLocationID must be an integer zone ID'),
    'deep nesting': (_raw(b'[' * 200_000 + b']' * 200_000), 400, 'nested too deeply'),
    'deep objects': (_raw(b'{"a":' * 50_000 + b'1' + b'}' * 50_000), 400, 'nested too deeply'),
    'nested but shallow enough': (dict(json=[[[[RIDE]]]]), 400, 'ride 0: a ride must be a JSON object'),
    'oversized': (_raw(b'[' + b' ' * serve.MAX_BODY_BYTES + b']'), 413, 'larger than'),
    'bad ride_id': (dict(json=dict(RIDE, ride_id=[1])), 400, 'ride_id must be'),
    'bool ride_id': (dict(json=dict(RIDE, ride_id=True)), 400, 'ride_id must be'),
    'long ride_id': (dict(json=dict(RIDE, ride_id='x' * 129)), 400, 'ride_id must be'),
    'duplicate key': (_raw(b'{"PULocationID": "x", "PULocationID": 43, "DOLocationID": 151, "trip_distance": 1}'), 400,
                      '"PULocationID" is given twice'),
    'duplicate key in a list': (_raw(b'[{"DOLocationID": 1, "DOLocationID": 2}]'), 400, '"DOLocationID" is given twice'),
}
for field in ('PULocationID', 'DOLocationID'):
    for name, value in [('bool', True), ('float', 43.0), ('string', '43'), ('list', [43]), ('object', {'id': 43}),
                        ('null', None), ('zero', 0), ('266', 266), ('negative', -1), ('huge', 10**30)]:
        BAD[f'{field} {name}'] = (dict(json=dict(RIDE, **{field: value})), 400, f'{field} must be an integer zone ID from 1 to 265')
for name, value in [('negative', -0.5), ('absurd', 1000), ('just over', 100.01), ('string', '1.0'), ('bool', False),
                    ('list', [1.0]), ('object', {})]:
    BAD[f'distance {name}'] = (dict(json=dict(RIDE, trip_distance=value)), 400, 'trip_distance must be')
for name, value in [('words', 'tomorrow morning'), ('bad month', '2021-13-01T00:00'), ('bad day', '2021-02-30'),
                    ('number', 1614933000), ('list', ['2021-03-05']), ('old', '1970-01-01T00:00'), ('far', '2150-01-01'),
                    ('overflow', '0001-01-01T00:00:00+05:00'), ('long', '2021-03-05T08:30:00' + ' ' * 50)]:
    BAD[f'pickup {name}'] = (dict(json=dict(RIDE, pickup_datetime=value)), 400, 'pickup_datetime must')


@pytest.mark.parametrize('case', list(BAD))
def test_bad_request(client, case):
    kwargs, status, fragment = BAD[case]
    r = client.post('/predict', **kwargs)
    assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.mimetype == 'application/json'
    assert set(r.json) == {'error', 'field'}  # every refusal names what is at fault: a field, or the body
    assert fragment in r.json['error'], r.json['error']
    assert len(r.json['error']) < 400  # never echoes a huge value back


@pytest.mark.parametrize('body,field', [(dict(RIDE, PULocationID=0), 'PULocationID'),
                                        ([RIDE, dict(RIDE, trip_distance=-1)], 'trip_distance'),
                                        ({'PULocationID': 43}, 'DOLocationID'), (dict(RIDE, ride_id=[]), 'ride_id'),
                                        (dict(RIDE, pickup_datetime='soon'), 'pickup_datetime')])
def test_refusal_names_the_field_as_data(client, body, field):
    r = client.post('/predict', json=body)
    assert r.status_code == 400
    assert r.json['field'] == field


@pytest.mark.parametrize('case', ['empty body', 'not JSON', 'not UTF-8', 'no content type', 'form', 'scalar', 'empty list',
                                  'deep nesting', 'oversized'])
def test_errors_about_the_whole_body_name_the_body(client, case):
    kwargs, status, _ = BAD[case]
    assert client.post('/predict', **kwargs).json['field'] == 'body'


def test_too_many_rides_names_the_body(client):
    assert client.post('/predict', json=[RIDE] * (serve.MAX_RIDES + 1)).json['field'] == 'body'


@pytest.mark.parametrize('method,path,status', [('GET', '/predict', 405), ('PUT', '/predict', 405), ('DELETE', '/health', 405),
                                                ('POST', '/health', 405), ('GET', '/nope', 404), ('GET', '/static/nope.js', 404)])
def test_http_errors_are_json(client, method, path, status):
    r = client.open(path, method=method)
    assert r.status_code == status
    assert r.mimetype == 'application/json'
    assert r.json['error']


def test_still_answers_after_bad_requests(client):
    for kwargs, _, _ in BAD.values(): client.post('/predict', **kwargs)
    assert client.get('/health').status_code == 200
    assert client.post('/predict', json=RIDE).status_code == 200


def test_debug_is_never_on(small_model, monkeypatch):
    monkeypatch.setenv('FLASK_DEBUG', '1')
    app = serve.create_app(served.ServedModel.fixed(small_model))
    assert not app.debug
    assert not app.config['PROPAGATE_EXCEPTIONS']


def test_a_bug_is_a_json_500_not_a_crash(small_model):
    app = serve.create_app(served.ServedModel.fixed(small_model))
    class Broken:
        def predict(self, X): raise RuntimeError('boom')
    holder = app.extensions['taxi_duration']
    holder.current = holder.current._replace(model=Broken())
    r = app.test_client().post('/predict', json=RIDE)
    assert r.status_code == 500
    assert r.json == {'error': 'internal error; it has been logged'}


# --- health, the page, the hook -----------------------------------------------------------------

def test_health(client):
    r = client.get('/health')
    assert r.status_code == 200
    assert r.json['status'] == 'ok'
    assert r.json['model_version'] == '1'


def test_health_leaks_nothing(small_registry, monkeypatch):
    "No store URI, no path, no error text for anonymous callers: a version, times, a status."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', small_registry['tracking_uri'])
    h = serve.create_app(served.ServedModel(refresh_seconds=0)).test_client().get('/health').json
    assert set(h) == {'status', 'model_version', 'loaded_at', 'last_check', 'refresh_seconds', 'problem'}
    assert '/' not in json.dumps({k: v for k, v in h.items() if k not in ('loaded_at', 'last_check')})


def test_page_and_zones(client):
    r = client.get('/')
    assert r.status_code == 200
    assert r.mimetype == 'text/html'
    assert b'pu-borough' in r.data
    assert "default-src 'self'" in r.headers['Content-Security-Policy']
    assert b'http://' not in r.data
    assert b'https://' not in r.data  # nothing loaded from elsewhere
    for f in ('app.js', 'style.css'): assert client.get(f'/static/{f}').status_code == 200
    z = client.get('/zones').json['boroughs']
    assert {b['name'] for b in z} >= {'Manhattan', 'Brooklyn', 'Queens', 'Bronx', 'Staten Island', 'EWR'}
    ids = sorted(zone['id'] for b in z for zone in b['zones'])
    assert ids == list(range(1, 266))


def test_hook_gets_checked_rides(small_model):
    seen = []
    app = serve.create_app(served.ServedModel.fixed(small_model, '1'), on_predictions=lambda *a: seen.append(a))
    r = app.test_client().post('/predict', json=[dict(RIDE, ride_id=1), dict(RIDE, trip_distance=3)])
    assert r.status_code == 200
    [(rides, preds, version)] = seen
    assert version == '1'
    assert preds.tolist() == [a['duration'] for a in r.json]  # minutes, to the hooks
    assert rides[1] == {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 3.0, 'pickup_datetime': dt.datetime(2021, 3, 5, 8, 30)}
    assert app.test_client().post('/predict', json=dict(RIDE, trip_distance=-1)).status_code == 400
    assert len(seen) == 1


def test_failing_hook_never_fails_a_request(small_model, caplog):
    def hook(*a): raise RuntimeError('monitor is down')
    app = serve.create_app(served.ServedModel.fixed(small_model), on_predictions=hook)
    c = app.test_client()
    with caplog.at_level(logging.ERROR, logger='taxi_duration.serve'):
        assert all(c.post('/predict', json=RIDE).status_code == 200 for _ in range(5))
    assert 'on_predictions failed' in caplog.text
    assert 'monitor is down' in caplog.text


# --- following the alias -----------------------------------------------------------------------

def test_follows_the_alias_without_restart(small_registry, tmp_path, monkeypatch, caplog):
    from taxi_duration.registry import client as mlflow_client
    uri = copy_store(small_registry, tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    caplog.set_level(logging.INFO, logger='taxi_duration.serve')
    app = serve.create_app(served.ServedModel(refresh_seconds=0.2))
    c, v1 = app.test_client(), small_registry['version']
    assert c.get('/health').json['model_version'] == v1  # the first request starts the refresh thread
    mc = mlflow_client()
    old = mc.get_model_version(MODEL_NAME, v1)
    new = mc.create_model_version(MODEL_NAME, old.source, old.run_id)
    mc.set_registered_model_alias(MODEL_NAME, 'champion', new.version)
    deadline, versions = time.time() + 30, set()
    while time.time() < deadline:  # keep asking while it swaps: every answer is one whole version
        r = c.post('/predict', json=RIDE)
        assert r.status_code == 200
        versions.add(r.json['model_version'])
        if r.json['model_version'] == str(new.version): break
        time.sleep(0.05)
    assert c.get('/health').json['model_version'] == str(new.version), versions
    assert f'moved: now serving version {new.version} (was {v1})' in caplog.text
    mc.delete_registered_model_alias(MODEL_NAME, 'champion')  # the alias vanishes: keep serving, say so once
    time.sleep(1)
    h = c.get('/health').json
    assert h['model_version'] == str(new.version)
    assert h['status'] == 'degraded'
    assert h['problem']
    assert 'no version of model' in caplog.text
    app.extensions['taxi_duration'].stop()


def test_pinned_version_is_not_followed(small_registry, monkeypatch):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', small_registry['tracking_uri'])
    app = serve.create_app(served.ServedModel(f"models:/{MODEL_NAME}/{small_registry['version']}", refresh_seconds=0.1))
    holder = app.extensions['taxi_duration']
    assert not holder.follows
    assert app.test_client().get('/health').json['refresh_seconds'] is None


# --- no champion ------------------------------------------------------------------------------

def test_no_champion_is_an_error(tracking):
    from taxi_duration.registry import client as mlflow_client
    mlflow_client().search_experiments()  # an existing, empty store
    with pytest.raises(TaxiDurationError, match='make run'):
        serve.app_from_env()


def _env(**kw):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY='true', DO_NOT_TRACK='true', WHYLOGS_NO_ANALYTICS='1', PYTHONUNBUFFERED='1')
    env['MONITORING_DIR'] = tempfile.mkdtemp(prefix='taxi-duration-test-monitoring-')  # app.py profiles live traffic
    env.update(kw)
    return env


@pytest.mark.parametrize('cmd', [[sys.executable, 'app.py'],
                                 [str(Path(sys.executable).parent / 'gunicorn'), '-b', '127.0.0.1:{port}', 'app:app']],
                         ids=['python', 'gunicorn'])
def test_no_champion_exits_at_once(tmp_path, cmd):
    cmd = [c.format(port=free_port()) for c in cmd]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=_env(MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/none.db', PORT=str(free_port())),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert time.time() - t0 < 45
    ours = [l for l in p.stderr.splitlines() if l.startswith('taxi-duration serve: error:')]
    assert ours, p.stderr
    assert 'make run' in ours[0], p.stderr
    assert 'taxi-duration pipeline' in ours[0], p.stderr
    if 'gunicorn' not in cmd[0]:
        lines = p.stderr.strip().splitlines()
        assert lines[-1] == ours[0]  # the error in one line, last: no traceback
        assert [l for l in lines[:-1] if 'loading model models:/taxi-duration@champion from' not in l] == []  # said first
    assert not (tmp_path / 'none.db').exists()  # no empty store created on the way


def test_served_process_is_tuned(small_registry):
    "app_or_exit (what app.py and gunicorn load) freezes the loaded heap and sets the GIL's turns."
    code = ('import gc, sys\nfrom taxi_duration.serve import app_or_exit\napp = app_or_exit()\n'
            'print(gc.get_freeze_count() > 0, sys.getswitchinterval())')
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=_env(MLFLOW_TRACKING_URI=small_registry['tracking_uri']),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    frozen, switch = p.stdout.split()
    assert frozen == 'True'
    assert float(switch) == served.GIL_SWITCH_SECONDS


@pytest.mark.parametrize('kind', ['python', 'gunicorn'])
def test_shell_serves(small_registry, kind, tmp_path):
    port = free_port()
    cmd = [sys.executable, 'app.py'] if kind == 'python' else [str(Path(sys.executable).parent / 'gunicorn'), 'app:app']
    url, log = f'http://127.0.0.1:{port}', tmp_path / 'server.log'
    with open(log, 'w') as out:  # gunicorn binds HOST:PORT from gunicorn.conf.py, as python app.py does
        proc = start(cmd, url=url + '/health', cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                     env=_env(MLFLOW_TRACKING_URI=small_registry['tracking_uri'], PORT=str(port), HOST='127.0.0.1'))
    try:
        assert requests.get(url + '/health', timeout=5).json()['model_version'] == small_registry['version']
        r = requests.post(url + '/predict', json=[RIDE, dict(RIDE, ride_id=7)], timeout=5)
        assert r.status_code == 200
        assert r.json()[1]['ride_id'] == 7
        r = requests.post(url + '/predict', data=b'x' * (serve.MAX_BODY_BYTES + 10), headers={'Content-Type': 'application/json'}, timeout=5)
        assert r.status_code == 413
        assert 'larger than' in r.json()['error']
        for raw in (b'GARBAGE\r\n\r\n', b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{',
                    b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'):
            with socket.create_connection(('127.0.0.1', port), timeout=5) as s:  # malformed HTTP, then hang up
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
                try: status = s.recv(4096).split(b'\r\n', 1)[0]
                except OSError: status = b''
                assert not status.startswith((b'HTTP/1.1 5', b'HTTP/1.0 5')), (raw, status)
        r = requests.post(url + '/predict', json=RIDE, timeout=5)
        assert r.status_code == 200
        assert 'Werkzeug Debugger' not in r.text
    finally:
        stop(proc)
    assert 'serving models:/taxi-duration@champion: version' in log.read_text()
