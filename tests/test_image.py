"""The container image: the project's Dockerfile built with podman on a Debian base made here from Debian's
package repository (no container registry is reachable), then run against a model store mounted from the host.

`make test-image` runs this module (it is skipped in `make test`: a build takes minutes). Where podman cannot run
containers it is skipped, saying why; under CI=true it fails instead. The Debian base, the downloaded wheels and
podman's layers are kept (`$TAXI_IMAGE_CACHE`, default ~/.cache/taxi-duration/image; podman's own storage), so a
second run rebuilds only what changed."""
import json, os, re, shutil, sqlite3, subprocess, sys, time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, copy_store
from servers import free_port, wait_http

CACHE = Path(os.environ.get('TAXI_IMAGE_CACHE') or Path.home() / '.cache' / 'taxi-duration' / 'image')
BASE = 'localhost/taxi-duration-base:bookworm'
IMAGE = 'localhost/taxi-duration:test'
# crun refuses this machine's cgroup layout; podman's default ulimits exceed the machine's
CONTAINERS_CONF = '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n'
RIDE = {'PULocationID': 43, 'DOLocationID': 151}  # zones only: what a rider knows before the ride


def _why_not() -> str|None:
    "Why podman cannot build and run the image here, or None."
    if not os.environ.get('TAXI_TEST_IMAGE'):
        return 'the image is built and run by `make test-image` (TAXI_TEST_IMAGE=1), not by `make test`'
    missing = [t for t in ('podman', 'mmdebstrap', 'runc') if not shutil.which(t)]
    if missing: return f"{' '.join(missing)} not installed (apt-get install podman mmdebstrap runc)"
    if os.geteuid() != 0: return 'these podman settings run containers as root (rootless podman needs subuids set up)'
    return None


def _skip_or_fail(why: str):
    "Skip saying why; fail instead when CI asked for the image test."
    if os.environ.get('CI') == 'true' and os.environ.get('TAXI_TEST_IMAGE'): pytest.fail(f'cannot test the image: {why}')
    pytest.skip(why)


def _ran(cmd: list, check=True, **kw) -> subprocess.CompletedProcess:
    "`cmd` run with its output captured; when `check` and it fails, the test fails with the end of its stderr."
    done = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and done.returncode != 0:  # a bare exit status hides the cause (a full disk showed as podman's 125)
        pytest.fail(f"{' '.join(map(str, cmd[:3]))} exited {done.returncode}: {done.stderr.strip()[-1500:]}", pytrace=False)
    return done


@pytest.fixture(scope='session')
def podman():
    "A function running podman with this machine's settings; skip (fail under CI) where it cannot run."
    why = _why_not()
    if why: _skip_or_fail(why)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / 'containers.conf').write_text(CONTAINERS_CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(CACHE / 'containers.conf'))

    def run(*args, check=True, **kw):
        return _ran(['podman', *args], check=check, env=env, **kw)
    info = run('info', check=False)
    if info.returncode != 0: _skip_or_fail(f"podman cannot run here: {info.stderr.strip()[-300:]}")
    return run


def _debian_mirror() -> str:
    "The Debian mirror apt uses on this machine (deb822 or one-line sources); Debian's CDN otherwise."
    for f in [Path('/etc/apt/sources.list'), *sorted(Path('/etc/apt/sources.list.d').glob('*'))]:
        text = f.read_text() if f.is_file() else ''
        for m in re.finditer(r'^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?\s', text, re.M):
            return m.group(1)
    return 'http://deb.debian.org/debian'


@pytest.fixture(scope='session')
def base_image(podman):
    "A Debian bookworm base with python3 and python3-venv, made once with mmdebstrap and imported into podman."
    if podman('image', 'exists', BASE, check=False).returncode == 0: return BASE
    tar = CACHE / 'rootfs.tar'
    _ran(['mmdebstrap', '--variant=minbase', '--mode=root', '--include=python3,python3-venv,ca-certificates',
          'bookworm', str(tar), f'deb {_debian_mirror()} bookworm main'])
    podman('import', str(tar), BASE)
    tar.unlink()
    return BASE


@pytest.fixture(scope='session')
def image(podman, base_image):
    "The project's Dockerfile built offline: wheels downloaded on the host, the build itself without network."
    wheels = CACHE / 'wheels'
    _ran([sys.executable, '-m', 'pip', 'download', '-q', '-d', str(wheels), f'{ROOT}[kubeflow]', 'setuptools'])
    t0 = time.perf_counter()
    podman('build', '--format', 'docker', '--network', 'none', '--build-arg', f'BASE={base_image}',
           '--build-context', f'wheels={wheels}', '--build-arg', 'PIP_OPTIONS=--no-index --find-links /wheels',
           '-t', IMAGE, str(ROOT))
    size = int(podman('image', 'inspect', '--format', '{{.Size}}', IMAGE).stdout)
    print(f'image {IMAGE}: built in {time.perf_counter() - t0:.0f} s, {size / 1e6:.0f} MB')
    return IMAGE


def test_image_runs_as_a_user_not_root(podman, image):
    assert podman('image', 'inspect', '--format', '{{.Config.User}}', image).stdout.strip() == '10001'
    assert podman('run', '--rm', '--network', 'none', image, 'id', '-un').stdout.strip() == 'app'


def test_image_holds_no_data_and_no_model(podman, image):
    out = podman('run', '--rm', '--network', 'none', '--user', '0', image, 'sh', '-c',  # outside the installed packages (pandas ships test files)
                 'find / -xdev \\( -path /opt/venv -o -path /usr \\) -prune -o '
                 '\\( -name "*.parquet" -o -name "*.csv" -o -name MLmodel -o -name "*.db" -o -name "*.skops" \\) -print').stdout
    assert out.strip() == ''


@pytest.fixture(scope='module')
def service(podman, image, trained_store, tmp_path_factory):
    """The image serving a copy of the session's champion store, mounted from the host (the artifacts at the paths
    the store names), live profiles into a mounted folder; its base URL, name, monitoring folder, seconds to answer."""
    tmp = tmp_path_factory.mktemp('image')
    uri = copy_store(trained_store, tmp)
    store = Path(trained_store['tracking_uri'][len('sqlite:///'):]).parent
    monitoring = tmp / 'monitoring'; monitoring.mkdir()
    for d in (tmp, monitoring): d.chmod(0o777)  # the container's user is not root
    (tmp / 'mlflow.db').chmod(0o666)
    for d, _, files in os.walk(store):  # the shared store, read-only for the container's user
        os.chmod(d, 0o755)
        for f in files: os.chmod(os.path.join(d, f), 0o644)
    port, name = free_port(), f'taxi-duration-test-{os.getpid()}'
    t0 = time.perf_counter()
    podman('run', '-d', '--name', name, '--network', 'host', '-e', 'HOST=127.0.0.1', '-e', f'PORT={port}',
           '-e', f'MLFLOW_TRACKING_URI={uri}', '-v', f'{tmp}:{tmp}', '-v', f'{store}:{store}:ro',
           '-v', f'{monitoring}:/home/app/monitoring', image)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_http(base + '/health', timeout=180)
        first = time.perf_counter() - t0
        print(f'container: first answer {first:.1f} s after podman run')
        yield dict(base=base, name=name, monitoring=monitoring, first=first)
    finally:
        logs = podman('logs', name, check=False)
        podman('rm', '-f', '-t', '30', name, check=False)
        print(logs.stderr[-3000:])


def test_health(service):
    r = requests.get(service['base'] + '/health', timeout=10)
    assert r.status_code == 200, r.text


def test_docker_healthcheck_passes(podman, service):
    assert podman('healthcheck', 'run', service['name'], check=False).returncode == 0


def test_zones_only_ride_is_answered(service):
    r = requests.post(service['base'] + '/predict', json=RIDE, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()['used_distance'] is False


def test_map_page_and_its_shapes(service):
    assert 'text/html' in requests.get(service['base'] + '/', timeout=10).headers['Content-Type']
    shapes = requests.get(service['base'] + '/zones/shapes', timeout=10)
    assert shapes.status_code == 200, shapes.text
    assert len(shapes.json()['zones']) > 200


def test_live_profiles_land_in_the_mounted_folder(podman, service):
    for _ in range(20):
        assert requests.post(service['base'] + '/predict', json=RIDE, timeout=10).status_code == 200
    podman('stop', '-t', '30', service['name'])  # SIGTERM: the workers write their open profiles
    assert sorted(service['monitoring'].glob('profile-*.bin'))
