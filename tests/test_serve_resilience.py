"""The service under gunicorn as it runs in production (`gunicorn app:app`, settings from gunicorn.conf.py): the
port opens only once the model is loaded (once, in the master), each worker profiles in a child of its own, idle
clients cannot stall it, a worker killed with SIGKILL is replaced without failing later requests, a worker that
restarts while the registry cannot give it its model serves the one it was forked with, errors about the whole body
name it, SIGTERM closes an idle keep-alive connection after the keep-alive time, and SIGTERM under keep-alive load
leaves no request unanswered."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import copy_store
from servers import accepts, free_port, start, stop, wait_until
from taxi_duration import serve
from taxi_duration.core import MODEL_NAME

ROOT = Path(__file__).resolve().parent.parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}


def workers(master: int) -> set[int]:
    "The pids of a gunicorn master's worker processes."
    out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(master)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _first_connection(proc, port: int, log: Path) -> dict:
    """Wait until a TCP connection to `port` gets through; what the log said at that moment, and how long the first
    request then took to be answered, and with what status."""
    wait_until(lambda: accepts(port), f'gunicorn to listen on port {port}', timeout=90, proc=proc, detail=log.read_text,
               every=0.05)
    said = log.read_text()  # read after the connection got through: what was logged before the port opened
    t0 = time.time()
    status = requests.get(f'http://127.0.0.1:{port}/health', timeout=60).status_code
    return dict(log=said, status=status, seconds=time.time() - t0)


def _gunicorn(small_registry, tmp_path):
    "Start gunicorn with the production settings on a private copy of the small registry; yield its details."
    uri = copy_store(small_registry, tmp_path)
    port = free_port()
    (tmp_path / 'home').mkdir()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MODEL_CACHE_DIR=str(tmp_path / 'cache'), HOST='127.0.0.1',
               PORT=str(port), MONITORING_DIR=str(tmp_path / 'monitoring'), REFRESH_SECONDS='1', PYTHONUNBUFFERED='1',
               HOME=str(tmp_path / 'home'))
    for k in ('MODEL_URI', 'XDG_RUNTIME_DIR'): env.pop(k, None)
    cmd = [str(Path(sys.executable).parent / 'gunicorn'), 'app:app']  # the settings: ./gunicorn.conf.py, as shipped
    log = open(tmp_path / 'gunicorn.log', 'w')
    proc = start(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        first = _first_connection(proc, port, tmp_path / 'gunicorn.log')
        wait_until(lambda: len(workers(proc.pid)) >= 2 and _ok(url), 'two workers and /health answering', timeout=60,
                   proc=proc, detail=(tmp_path / 'gunicorn.log').read_text, every=0.2)
        yield dict(proc=proc, url=url, port=port, tmp=tmp_path, uri=env['MLFLOW_TRACKING_URI'], first=first)
    finally:
        stop(proc, timeout=30)
        log.close()


@pytest.fixture(scope='module')
def server(small_registry, tmp_path_factory):
    """One service for the module, its tests in file order: the calm ones first (idle clients, /health), then those
    that kill its workers and move the alias, then SIGTERM. Each gunicorn start costs about 15 CPU-seconds."""
    yield from _gunicorn(small_registry, tmp_path_factory.mktemp('service'))


def _ok(url) -> bool:
    try: return requests.get(url + '/health', timeout=2).status_code == 200
    except requests.RequestException: return False


def test_the_port_opens_only_once_the_model_is_loaded(server):
    """No client waits on a loading model: the master loads it before it listens (preload_app), so the first
    connection that gets through finds it loaded, and the first request is answered at once."""
    first = server['first']
    assert 'loaded in' in first['log'], first['log']
    assert first['status'] == 200
    assert first['seconds'] < 10  # a worker forked from the loaded master, not one loading the model


def test_the_model_is_loaded_once_and_said_before_and_after(server):
    log = (server['tmp'] / 'gunicorn.log').read_text()
    assert log.count('loading model models:/taxi-duration@champion from sqlite:///') == 1, log  # not once per worker
    assert log.index('loading model') < log.index('loaded in') < log.index('Listening at:'), log


def test_each_worker_profiles_in_a_child_of_its_own_and_the_master_in_none(server):
    import psutil
    master = psutil.Process(server['proc'].pid)
    def profilers() -> list: return sorted(len(w.children()) for w in master.children())  # children per worker
    wait_until(lambda: profilers() == [1, 1], 'one profiling child in each of the two workers', timeout=20,
               detail=lambda: f'profiling children per worker: {profilers()}', every=0.2)
    assert {c.pid for c in master.children()} == workers(master.pid)  # no profiling child of the master's


def test_idle_connections_do_not_stall_the_service(server):
    idle = [socket.create_connection(('127.0.0.1', server['port']), timeout=5) for _ in range(50)]
    try:
        time.sleep(0.5)  # let both workers accept some of them
        seconds = []
        for _ in range(20):
            t0 = time.perf_counter()
            r = requests.post(server['url'] + '/predict', json=RIDE, timeout=10)
            seconds.append(time.perf_counter() - t0)
            assert r.status_code == 200
        seconds.sort()
        assert seconds[len(seconds) // 2] < 0.1, seconds
        assert seconds[-1] < 1, seconds  # sync workers: 30 s, then killed
    finally:
        for s in idle: s.close()


def test_health_shows_how_live_monitoring_is_doing(server):
    requests.post(server['url'] + '/predict', json=RIDE, timeout=5)
    m = requests.get(server['url'] + '/health', timeout=5).json()['monitoring']
    assert set(m) == {'status', 'recorded', 'dropped', 'refused', 'unwritten', 'files_written', 'errors'}
    assert m['status'] == 'ok'
    assert m['errors'] == 0


def test_production_settings_come_from_gunicorn_conf(server):
    "`gunicorn app:app` alone gets the threaded worker that does not drop requests, and no control socket in $HOME."
    log = (server['tmp'] / 'gunicorn.log').read_text()
    assert 'Using worker: taxi_duration.serve.GracefulThreadWorker' in log
    assert not (server['tmp'] / 'home' / '.gunicorn').exists()  # gunicorn 26's default: one per user, shared


@pytest.mark.parametrize('case', ['too many rides', 'deep nesting', 'no content type', 'not UTF-8', 'too large'])
def test_errors_about_the_whole_body_name_the_body(server, case):
    post = {'too many rides': dict(json=[RIDE] * (serve.MAX_RIDES + 1)),
            'deep nesting': dict(data=b'[' * 100_000 + b']' * 100_000, headers={'Content-Type': 'application/json'}),
            'no content type': dict(data=b'{"PULocationID": 43, "DOLocationID": 151}'),
            'not UTF-8': dict(data=b'{"PULocationID": "\xff\xfe"}', headers={'Content-Type': 'application/json'}),
            'too large': dict(data=b' ' * (serve.MAX_BODY_BYTES + 1), headers={'Content-Type': 'application/json'})}[case]
    r = requests.post(server['url'] + '/predict', timeout=10, **post)
    assert 400 <= r.status_code < 500
    assert r.json()['field'] == 'body'


def _load(url, stop: threading.Event, log: list):
    "POST rides until `stop`, recording (time, ok) for each."
    with requests.Session() as s:
        while not stop.is_set():
            try: ok = s.post(url + '/predict', json=RIDE, timeout=5).status_code == 200
            except requests.RequestException: ok = False
            log.append((time.time(), ok))


def test_a_killed_worker_is_replaced_and_later_requests_all_succeed(server):
    stop, log = threading.Event(), []
    loaders = [threading.Thread(target=_load, args=(server['url'], stop, log)) for _ in range(2)]
    for t in loaders: t.start()
    try:
        time.sleep(1)
        before = workers(server['proc'].pid)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(workers(server['proc'].pid) - before) >= 1 and _ok(server['url']),
                   'a replacement worker and /health answering', timeout=60)
        replaced = time.time()
        time.sleep(4)
    finally:
        stop.set()
        for t in loaders: t.join()
    after = [ok for t, ok in log if t > replaced + 0.5]
    assert len(after) > 5, f'{after.count(False)} of {len(after)} failed after the replacement'
    assert all(after), f'{after.count(False)} of {len(after)} failed after the replacement'
    assert server['proc'].poll() is None
    assert len(workers(server['proc'].pid)) == 2


def test_a_worker_restarting_without_the_registry_serves_the_model_it_was_forked_with(server):
    """Both workers killed while the champion alias is gone: gunicorn forks new ones from the master, which holds the
    model it loaded at start, so they answer at once; their first look-up of the alias fails, and /health says so."""
    from mlflow import MlflowClient
    MlflowClient(server['uri']).delete_registered_model_alias(MODEL_NAME, 'champion')
    before = workers(server['proc'].pid)
    for pid in before: os.kill(pid, signal.SIGKILL)  # both: every worker now starts without a champion
    wait_until(lambda: len(workers(server['proc'].pid) - before) >= 2 and _ok(server['url']),
               'two replacement workers and /health answering', timeout=60, proc=server['proc'], every=0.2)
    r = requests.post(server['url'] + '/predict', json=RIDE, timeout=5)
    assert r.status_code == 200
    assert r.json()['model_version'] == '1'
    def health() -> dict: return requests.get(server['url'] + '/health', timeout=5).json()
    # REFRESH_SECONDS=1: the look-up fails within a second or two
    wait_until(lambda: health()['status'] == 'degraded', "/health to say 'degraded'", timeout=20,
               detail=lambda: str(health()), every=0.2)
    assert 'the last look-up of the model failed' in health()['problem']
    assert 'still serving version 1' in (server['tmp'] / 'gunicorn.log').read_text()


def test_sigterm_closes_an_idle_keep_alive_connection_after_the_keep_alive_time(server):
    """A browser keeps its connection open after an answer. On SIGTERM the worker closes it once it has been idle for
    the keep-alive time (gunicorn.conf.py: 5 s), as while serving; it does not hold the stop for the whole graceful
    timeout (25 s)."""
    conn = http.client.HTTPConnection('127.0.0.1', server['port'], timeout=60)
    conn.request('GET', '/health')
    r = conn.getresponse()
    r.read()
    answered = time.monotonic()
    server['proc'].send_signal(signal.SIGTERM)
    assert conn.sock.recv(1) == b''  # closed by the server, nothing sent
    assert time.monotonic() - answered < 15


def test_after_sigterm_every_profile_written_is_whole(server):
    "Workers killed with SIGKILL and their replacements: what any of them wrote is readable after a SIGTERM."
    from taxi_duration.profiles import read_view
    server['proc'].send_signal(signal.SIGTERM)  # a second one, when the test above sent one: the stop goes on
    assert server['proc'].wait(timeout=60) == 0  # within gunicorn.conf.py's graceful_timeout
    files = list((server['tmp'] / 'monitoring').rglob('*.bin'))
    assert files
    assert all(read_view(f) for f in files)


@pytest.mark.parametrize('cmd', [[sys.executable, 'app.py'],
                                 [str(Path(sys.executable).parent / 'gunicorn'), '-w', '2', 'app:app']],
                         ids=['python', 'gunicorn'])
def test_an_unwritable_monitoring_dir_fails_at_start_in_one_line(small_registry, tmp_path, cmd):
    env = dict(os.environ, MLFLOW_TRACKING_URI=small_registry['tracking_uri'], MONITORING_DIR='/proc/no-such-folder',
               PORT=str(free_port()))
    if 'gunicorn' in cmd[0]: cmd = cmd + ['-b', f"127.0.0.1:{env['PORT']}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    ours = [l for l in p.stderr.splitlines() if l.startswith('taxi-duration serve: error:')]
    assert p.returncode != 0, p.stderr[-2000:]
    assert ours, p.stderr[-2000:]
    assert 'cannot write live profiles to /proc/no-such-folder' in ours[0], p.stderr[-2000:]
    assert 'Traceback' not in p.stderr
    if 'gunicorn' not in cmd[0]: assert p.stderr.strip().splitlines()[-1] == ours[0]  # the model loaded, then one line



def _keep_alive_client(port: int, body: bytes, out: dict):
    """Send one ride after another on a keep-alive connection, a new connection whenever an answer says
    `Connection: close`, until connecting is refused (the server is gone: nothing was sent). A request sent on a
    connection that ends without an answer is lost."""
    conn = None
    while True:
        if conn is None:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=15)
            try: conn.connect()
            except ConnectionRefusedError: return
        try:
            conn.request('POST', '/predict', body=body, headers={'Content-Type': 'application/json'})
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException) as e:
            out['lost'].append(repr(e))
            conn.close(); conn = None
            continue
        out['statuses'].append(r.status)
        if (r.getheader('Connection') or '').lower() == 'close': conn.close(); conn = None


def test_sigterm_under_keep_alive_load_leaves_no_request_unanswered(small_registry, tmp_path):
    """Clients sending continuously on keep-alive connections while the master gets SIGTERM (a rolling restart):
    every request sent is answered; a client learns the server is going from `Connection: close`, then from a
    refused connection, never from a request dropped on the floor."""
    import json
    service = _gunicorn(small_registry, tmp_path)
    s = next(service)
    out = {'lost': [], 'statuses': []}
    clients = [threading.Thread(target=_keep_alive_client, args=(s['port'], json.dumps(RIDE).encode(), out))
               for _ in range(4)]
    try:
        for t in clients: t.start()
        time.sleep(2)
        answered_before = len(out['statuses'])
        os.kill(s['proc'].pid, signal.SIGTERM)
        assert s['proc'].wait(timeout=30) == 0
        for t in clients: t.join(timeout=30)
    finally:
        service.close()
    assert answered_before > 0
    assert out['lost'] == []
    assert set(out['statuses']) == {200}
