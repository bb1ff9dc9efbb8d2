"""The `taxi-duration` command as a user runs it (a process), and the make targets around it: help without
the heavy imports, --version, suggestions for misspelt options, one-line errors, `serve`, `make run`'s
second time, `make clean` / `distclean`, `make lab`."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, ROOT, copy_store
from servers import free_port, start, stop, wait_until

BIN = Path(sys.executable).parent
CLI = str(BIN / 'taxi-duration')


def run(*args, env=None, timeout=120, **kw):
    "The CLI as a process: (exit code, stdout, stderr)."
    p = subprocess.run([CLI, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout, **kw)
    return p.returncode, p.stdout, p.stderr


def one_error_line(err: str) -> str:
    "The last line of stderr, which must be the only error line."
    lines = err.strip().splitlines()
    assert sum('error:' in l for l in lines) == 1, err
    return lines[-1]


# --- help, version, suggestions

def test_help_does_not_import_scikit_learn_pandas_or_mlflow():
    code = ("import sys, contextlib, io\nfrom taxi_duration.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in ('sklearn', 'pandas', 'mlflow') if m in sys.modules))")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == '[]'


def test_help_lists_every_command():
    code, out, _ = run('--help')
    assert [c for c in ('pipeline', 'serve', 'score', 'monitor', 'flow', 'backfill') if f'    {c} ' not in out] == []


def test_help_exits_0():
    assert run('--help')[0] == 0


def test_a_command_s_help_shows_its_own_options():
    code, out, _ = run('score', '--help')
    assert '--model_uri' in out


def test_version():
    import taxi_duration
    assert run('--version')[1].strip() == f'taxi-duration {taxi_duration.__version__}'


def test_a_misspelt_option_gets_a_suggestion():
    code, _, err = run('pipeline', '--trian_data', 'green:2021-01')
    assert err.strip().splitlines()[-1] == ('taxi-duration pipeline: error: unrecognized arguments: '
                                            '--trian_data green:2021-01 (did you mean --train_data?)')


def test_a_misspelt_option_exits_2():
    assert run('pipeline', '--trian_data', 'green:2021-01')[0] == 2


def test_a_misspelt_command_gets_a_suggestion():
    code, _, err = run('moniter')
    assert "unknown command 'moniter' (did you mean monitor?)" in err.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def one_digit_month():
    "`pipeline --train_data green:2021-1`, run once for the tests of its answer."
    return run('pipeline', '--train_data', 'green:2021-1')


def test_a_one_digit_month_says_the_month_needs_two_digits(one_digit_month):
    assert one_error_line(one_digit_month[2]) == "taxi-duration: error: 'green:2021-1': the month needs two digits: green:2021-01"


def test_a_one_digit_month_exits_2(one_digit_month):
    assert one_digit_month[0] == 2


def test_threshold_names_come_out_sorted(tmp_path):
    code, _, err = run('monitor', '--data', 'x.parquet', '--threshold', 'nope=1', cwd=tmp_path)
    names = one_error_line(err).split('use one of ')[-1].split(', ')
    assert names == sorted(names)


# --- serve

def test_serve_refuses_a_port_that_is_not_a_number_with_one_line():
    code, _, err = run('serve', '--port', 'http')
    assert one_error_line(err) == "taxi-duration: error: port must be a number 1-65535, got 'http'"


@pytest.mark.skipif(not (ROOT / 'gunicorn.conf.py').exists(), reason='gunicorn.conf.py is not in this checkout')
def test_serve_answers_a_ride_with_the_production_settings(small_registry, tmp_path):
    import requests
    port = free_port()
    env = {**os.environ, 'MLFLOW_TRACKING_URI': small_registry['tracking_uri'], 'MONITORING_DIR': str(tmp_path / 'mon'),
           'MODEL_CACHE_DIR': str(tmp_path / 'cache')}
    p = start([CLI, 'serve', '--port', str(port)], url=f'http://127.0.0.1:{port}/health', env=env, cwd=tmp_path,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = requests.post(f'http://127.0.0.1:{port}/predict', json={'PULocationID': 43, 'DOLocationID': 151}, timeout=30)
    finally:
        stop(p)
    assert r.json()['model_version'] == small_registry['version']


# --- the pipeline: unreachable tracking server, a champion already trained on the same files

@pytest.fixture(scope='module')
def unreachable_tracking():
    "`pipeline` with MLFLOW_TRACKING_URI on a port nothing listens on, run once for the tests of its answer."
    return run('pipeline', env={'MLFLOW_TRACKING_URI': f'http://127.0.0.1:{free_port()}'}, timeout=60)


def test_an_unreachable_tracking_server_is_one_line(unreachable_tracking):
    assert one_error_line(unreachable_tracking[2]).startswith('taxi-duration: error: the tracking server http://127.0.0.1:')


def test_an_unreachable_tracking_server_exits_2(unreachable_tracking):
    assert unreachable_tracking[0] == 2


@pytest.fixture(scope='module')
def trained_copy(trained_store, tmp_path_factory):
    "A private copy of the session's store, whose champion was trained on the full 2021-01/02 months."
    return copy_store(trained_store, tmp_path_factory.mktemp('cli-store'))


def test_skip_if_trained_keeps_the_champion_trained_on_the_same_files(trained_copy, real_months, tmp_path):
    from mlflow import MlflowClient
    env = {'MLFLOW_TRACKING_URI': trained_copy, 'TAXI_DATA_DIR': str(real_months)}
    code, out, err = run('pipeline', '--skip_if_trained', env=env, cwd=tmp_path)
    assert out.startswith('champion: taxi-duration version 1 was trained on green:2021-01 / green:2021-02 with gbm: '
                          'not training again'), err
    assert len(MlflowClient(trained_copy).search_model_versions("name='taxi-duration'")) == 1


# --- make targets

@pytest.fixture
def checkout_litter(tmp_path):
    "A folder with the Makefile and what make run and the tests leave behind."
    shutil.copy(ROOT / 'Makefile', tmp_path)
    for d in ('model-cache/m', 'mlruns/1', 'runs/manual', 'monitoring/live', 'data'):
        (tmp_path / d).mkdir(parents=True)
    for f in ('mlflow.db', '.mlflow.db.store.lock', '.mlflow.db.promotion.lock', 'data/green_tripdata_2021-01.parquet'):
        (tmp_path / f).write_text('x')
    return tmp_path


def make(folder, *targets):
    "`make TARGETS` in `folder`, its venv the folder's own (`clean` removes it: never another)."
    return subprocess.run(['make', '--no-print-directory', 'VENV=.venv', *targets], cwd=folder, capture_output=True, text=True,
                          timeout=60, env={**os.environ, 'TAXI_DATA_DIR': str(folder / 'data')})


def test_make_clean_removes_what_runs_wrote(checkout_litter):
    make(checkout_litter, 'clean')
    assert sorted(p.name for p in checkout_litter.iterdir()) == ['Makefile', 'data']


def test_make_clean_keeps_the_downloaded_months(checkout_litter):
    make(checkout_litter, 'clean')
    assert (checkout_litter / 'data' / 'green_tripdata_2021-01.parquet').exists()


def test_make_distclean_removes_the_downloaded_months_too(checkout_litter):
    make(checkout_litter, 'distclean')
    assert sorted(p.name for p in checkout_litter.iterdir()) == ['Makefile']


def test_the_store_s_lock_files_are_ignored_by_git():
    p = subprocess.run(['git', 'check-ignore', '-q', '.mlflow.db.store.lock'], cwd=ROOT)
    assert p.returncode == 0


def test_make_run_installs_no_extra():
    out = subprocess.run(['make', '-n', '-B', 'run'], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert [l for l in out.splitlines() if 'pip install' in l and '[' in l] == []


def test_make_test_installs_every_extra():
    out = subprocess.run(['make', '-n', '-B', 'test'], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "pip install -e '.[all]'" in out


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "make lab on a free loopback port (nothing installed: the venv is there); its URL and token."
    pytest.importorskip('jupyterlab')
    tmp, port, token = tmp_path_factory.mktemp('lab'), free_port(), 'test-token'
    env = {**{k: v for k, v in os.environ.items() if k != 'MLFLOW_TRACKING_URI'}, 'JUPYTER_TOKEN': token, 'JUPYTER_RUNTIME_DIR': str(tmp / 'runtime'),
           'JUPYTER_CONFIG_DIR': str(tmp / 'config'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp / 'ws')}
    venv = sys.prefix  # the venv these tests run in, whatever VENV make test was given
    p = start(['make', '--no-print-directory', f'VENV={venv}', '-o', f'{venv}/.installed', '-o', f'{venv}/.installed-lab',
               'lab', f'LAB_PORT={port}'], url=f'http://127.0.0.1:{port}/api/status?token={token}', timeout=120, cwd=ROOT,
              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield dict(url=f'http://127.0.0.1:{port}', token=token)
    stop(p)


def _process_naming(word: str) -> dict|None:
    "The command line and environment (from /proc) of a process whose command line holds `word`; None if there is none."
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try: cmd = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
        except OSError: continue
        if any(word.encode() in c for c in cmd):
            env = dict(l.split('=', 1) for l in Path(f'/proc/{pid}/environ').read_bytes().decode().split('\0') if '=' in l)
            return dict(argv=[c.decode() for c in cmd if c], env=env)
    return None


@pytest.fixture(scope='module')
def lab_kernel(lab):
    "A kernel started through make lab's server: its process's command line and environment (from /proc)."
    import requests
    auth = {'token': lab['token']}
    kernel = requests.post(f"{lab['url']}/api/kernels", params=auth, json={'name': 'python3'}, timeout=60).json()
    try: yield wait_until(lambda: _process_naming(kernel['id']), f"the process of kernel {kernel['id']}", timeout=60,
                          every=0.2)
    finally: requests.delete(f"{lab['url']}/api/kernels/{kernel['id']}", params=auth, timeout=30)


def test_make_lab_s_kernel_is_the_project_s_python(lab_kernel):
    assert Path(lab_kernel['argv'][0]).parent.resolve() == Path(sys.executable).parent.resolve()


def test_make_lab_s_kernel_has_the_data_folder_set(lab_kernel):
    assert lab_kernel['env']['TAXI_DATA_DIR'] == str(DATA_DIR)


def test_make_lab_s_kernel_uses_the_store_make_run_uses(lab_kernel):
    assert lab_kernel['env']['MLFLOW_TRACKING_URI'] == f'sqlite:///{ROOT}/mlflow.db'


def test_make_lab_opens_on_the_notebooks(lab):
    import requests
    listing = requests.get(f"{lab['url']}/api/contents", params={'token': lab['token']}, timeout=10).json()
    assert 'nbs' in [c['name'] for c in listing['content']]
