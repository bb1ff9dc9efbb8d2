"""The service under gunicorn as it runs in production (serve.GUNICORN_ARGS): idle clients cannot
stall it, a worker killed with SIGKILL is replaced without failing later requests, and a worker that
restarts while the registry cannot give it its model comes up from the last good local copy."""
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
from taxi_duration import serve
from taxi_duration.core import MODEL_NAME

ROOT = Path(__file__).resolve().parent.parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def workers(master: int) -> set[int]:
    "The pids of a gunicorn master's worker processes."
    out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(master)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _gunicorn(small_registry, tmp_path):
    "Start gunicorn with the production settings on a private copy of the small registry; yield its details."
    uri = copy_store(small_registry, tmp_path)
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MODEL_CACHE_DIR=str(tmp_path / 'cache'),
               MONITORING_DIR=str(tmp_path / 'monitoring'), REFRESH_SECONDS='1', PYTHONUNBUFFERED='1')
    env.pop('MODEL_URI', None)
    cmd = [str(Path(sys.executable).parent / 'gunicorn'), *serve.GUNICORN_ARGS.split(), '-b', f'127.0.0.1:{port}', 'app:app']
    log = open(tmp_path / 'gunicorn.log', 'w')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 60
        while len(workers(proc.pid)) < 2 or not _ok(url):
            assert proc.poll() is None and time.time() < deadline, (tmp_path / 'gunicorn.log').read_text()
            time.sleep(0.2)
        yield dict(proc=proc, url=url, port=port, tmp=tmp_path, uri=env['MLFLOW_TRACKING_URI'])
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(timeout=30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


@pytest.fixture(scope='module')
def server(small_registry, tmp_path_factory):
    """One service for the module, its tests in file order: the calm ones first (idle clients, /health), then those
    that kill its workers and move the alias, then SIGTERM. Each gunicorn start costs about 15 CPU-seconds."""
    yield from _gunicorn(small_registry, tmp_path_factory.mktemp('service'))


def _ok(url) -> bool:
    try: return requests.get(url + '/health', timeout=2).status_code == 200
    except requests.RequestException: return False


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
        assert seconds[len(seconds) // 2] < 0.1 and seconds[-1] < 1, seconds  # sync workers: 30 s, then killed
    finally:
        for s in idle: s.close()


def test_health_shows_how_live_monitoring_is_doing(server):
    requests.post(server['url'] + '/predict', json=RIDE, timeout=5)
    m = requests.get(server['url'] + '/health', timeout=5).json()['monitoring']
    assert set(m) == {'recorded', 'dropped', 'refused', 'files_written', 'errors'} and m['errors'] == 0


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
        deadline = time.time() + 60
        while len(workers(server['proc'].pid) - before) < 1 or not _ok(server['url']):
            assert time.time() < deadline, 'no replacement worker'
            time.sleep(0.1)
        replaced = time.time()
        time.sleep(4)
    finally:
        stop.set()
        for t in loaders: t.join()
    after = [ok for t, ok in log if t > replaced + 0.5]
    assert len(after) > 5 and all(after), f'{after.count(False)} of {len(after)} failed after the replacement'
    assert server['proc'].poll() is None and len(workers(server['proc'].pid)) == 2


def test_a_worker_restarting_without_the_registry_serves_the_last_good_copy(server):
    from mlflow import MlflowClient
    MlflowClient(server['uri']).delete_registered_model_alias(MODEL_NAME, 'champion')
    before = workers(server['proc'].pid)
    for pid in before: os.kill(pid, signal.SIGKILL)  # both: every worker now starts without a champion
    deadline = time.time() + 60
    while len(workers(server['proc'].pid) - before) < 2 or not _ok(server['url']):
        assert server['proc'].poll() is None, 'gunicorn stopped the whole server'
        assert time.time() < deadline, 'no replacement workers'
        time.sleep(0.2)
    r = requests.post(server['url'] + '/predict', json=RIDE, timeout=5)
    assert r.status_code == 200 and r.json()['model_version'] == '1'
    h = requests.get(server['url'] + '/health', timeout=5).json()
    assert h['status'] == 'degraded' and 'last good local copy' in h['problem']
    assert 'serving the last good local copy' in (server['tmp'] / 'gunicorn.log').read_text()


def test_after_sigterm_every_profile_written_is_whole(server):
    "Workers killed with SIGKILL and their replacements: what any of them wrote is readable after a SIGTERM."
    from taxi_duration.profiles import read_view
    server['proc'].send_signal(signal.SIGTERM)
    assert server['proc'].wait(timeout=30) == 0
    files = list((server['tmp'] / 'monitoring').rglob('*.bin'))
    assert files and all(read_view(f) for f in files)


@pytest.mark.parametrize('cmd', [[sys.executable, 'app.py'],
                                 [str(Path(sys.executable).parent / 'gunicorn'), '-w', '2', 'app:app']],
                         ids=['python', 'gunicorn'])
def test_an_unwritable_monitoring_dir_fails_at_start_in_one_line(small_registry, tmp_path, cmd):
    env = dict(os.environ, MLFLOW_TRACKING_URI=small_registry['tracking_uri'], MONITORING_DIR='/proc/no-such-folder',
               PORT=str(free_port()))
    if 'gunicorn' in cmd[0]: cmd = cmd + ['-b', f"127.0.0.1:{env['PORT']}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    ours = [l for l in p.stderr.splitlines() if l.startswith('taxi-duration serve: error:')]
    assert p.returncode != 0 and ours and 'cannot write live profiles to /proc/no-such-folder' in ours[0], p.stderr[-2000:]
    if 'gunicorn' not in cmd[0]: assert p.stderr.strip() == ours[0]  # one line, no traceback
