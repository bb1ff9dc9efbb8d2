"""A normal install works: build the wheel, install it into a fresh venv, run it.

The venv gets the project's dependencies from the interpreter running the tests (a .pth file pointing
at its site-packages: no download), but `taxi_duration` itself from the wheel — asserted through its
`__file__`. The wheel must ship the web page and the zone table; the `pipeline` command, which needs
the step notebooks of a checkout, says so in one line. Serving a model trained here needs a slice of
a real month (skipped, saying why, without the real months).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import logged_models
from servers import free_port, start, stop
from conftest import ROOT
from taxi_duration.core import modified_env

IGNORE = shutil.ignore_patterns('.git', '__pycache__', '*.egg-info', 'build', 'dist', '.venv', 'mlruns', 'mlflow.db',
                                'monitoring', 'runs', 'data', '_proc', '_docs')


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    "A fresh venv with the wheel of this checkout installed (dependencies borrowed, not downloaded)."
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    shutil.copytree(ROOT, src, ignore=IGNORE)  # build from a copy: no build/ or egg-info in the checkout
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    pip = [sys.executable, '-m', 'pip']
    r = subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', str(tmp / 'dist'),
                        str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = (tmp / 'dist').glob('taxi_duration-*.whl')
    v = tmp / 'v'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(v)], check=True, timeout=120)
    where = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    purelib = Path(subprocess.run([str(v / 'bin' / 'python'), '-c', where], capture_output=True, text=True,
                                  check=True).stdout.strip())
    (purelib / 'borrowed-deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    r = subprocess.run([*pip, '--python', str(v / 'bin' / 'python'), 'install', '--no-deps', '--no-index', '-q',
                        str(wheel)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(bin=v / 'bin', purelib=purelib, env=env, tmp=tmp, wheel=wheel)


def _run(venv, *args, cwd, **env):
    return subprocess.run(args, cwd=cwd, env=dict(venv['env'], **env), capture_output=True, text=True, timeout=300)


def test_the_package_is_imported_from_the_wheel_with_its_files(venv, tmp_path):
    code = ('import taxi_duration, taxi_duration.serve as s; print(taxi_duration.__file__); '
            "print((s.STATIC / 'index.html').exists(), (s.STATIC / 'app.js').exists(), "
            "(s.STATIC.parent / 'templates' / 'report.html.j2').exists())")
    r = _run(venv, str(venv['bin'] / 'python'), '-c', code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    where, files = r.stdout.split('\n')[:2]
    assert Path(where).is_relative_to(venv['purelib'])
    page, script, report_template = files.split()
    assert page == 'True'
    assert script == 'True'
    assert report_template == 'True'
    import zipfile
    names = zipfile.ZipFile(venv['wheel']).namelist()
    assert not [n for n in names if n.endswith(('.parquet', '.csv', '.shp', '.zip')) or 'SOURCES.md' in n]  # no TLC data


def test_the_cli_runs_and_pipeline_says_it_needs_the_notebooks(venv, tmp_path):
    r = _run(venv, str(venv['bin'] / 'taxi-duration'), '--help', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'pipeline' in r.stdout, r.stderr
    r = _run(venv, str(venv['bin'] / 'taxi-duration'), 'pipeline', cwd=tmp_path,
             MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db')
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith('taxi-duration: error: the step notebooks are not in'), line


def test_the_service_runs_from_the_wheel_on_a_model_trained_here(real_months, venv, empty_store, tmp_path):
    import requests
    uri = empty_store(tmp_path / 'store')
    with modified_env(MLFLOW_TRACKING_URI=uri, TAXI_DATA_DIR=str(real_months)):
        logged_models.register(logged_models.log_good(logged_models.real_rides('01', 3000)))
    port = free_port()
    with open(tmp_path / 'gunicorn.log', 'w') as log:  # the wheel's own worker class, as gunicorn.conf.py names it
        proc = start([str(venv['bin'] / 'python'), '-m', 'gunicorn', '-w', '1', '--worker-class',
                      'taxi_duration.serve.GracefulThreadWorker', '-b', f'127.0.0.1:{port}', 'taxi_duration.serve:app_or_exit()'],
                     url=f'http://127.0.0.1:{port}/health', cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log,
                     env=dict(venv['env'], MLFLOW_TRACKING_URI=uri, MODEL_URI='models:/taxi-duration@champion'))
    try:
        ride = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01,
                'pickup_datetime': '2021-03-05T08:30:00'}
        r = requests.post(f'http://127.0.0.1:{port}/predict', json=ride, timeout=5)
        assert r.status_code == 200, r.text
        assert r.headers['X-Model-Version'] == '1', r.text
        assert requests.get(f'http://127.0.0.1:{port}/', timeout=5).status_code == 200        # static page shipped
        assert requests.get(f'http://127.0.0.1:{port}/zones', timeout=5).status_code == 200   # zones from the TLC cache
    finally:
        stop(proc)
