"""`make test` on a user's machine: the suite looks for the months where the project does, says what it skipped and
why, and ignores what the user set for their own work (a mirror, a tracking server). Through `make` itself."""
import os, shutil, subprocess, sys
from pathlib import Path

import pytest

from conftest import MAKE_SETTINGS, ROOT, outer_make_variables, project_data_dir

HOSTILE = dict(TAXI_TLC_BASE_URL='http://127.0.0.1:9/a-mirror-of-the-users', MLFLOW_TRACKING_URI='http://127.0.0.1:9',
               TAXI_SAMPLE_DIR='/nonexistent/samples', MODEL_CACHE_DIR='/nonexistent/models')


def make(*args, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    "`make ARGS` with this Python's environment as the project's venv."
    return subprocess.run(['make', '--no-print-directory', f'VENV={sys.prefix}', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def makefile_data_dir(checkout: Path, env: dict) -> Path:
    "The TAXI_DATA_DIR the Makefile of `checkout` settles on in `env`."
    r = make('-s', '--eval', 'data-dir: ; @echo $(TAXI_DATA_DIR)', 'data-dir', cwd=checkout, env=env)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip()).resolve()


@pytest.mark.parametrize('shared, own', [(True, False), (False, False), (True, True)],
                         ids=['beside-the-checkout', 'only-./data', 'TAXI_DATA_DIR-set'])
def test_the_suite_looks_for_the_months_where_the_makefile_does(tmp_path, shared, own):
    checkout = tmp_path / 'checkout'
    checkout.mkdir()
    shutil.copy(ROOT / 'Makefile', checkout)
    if shared:
        (tmp_path / 'shared' / 'data').mkdir(parents=True)
        (tmp_path / 'shared' / 'data' / 'green_tripdata_2021-01.parquet').touch()
    env = {k: v for k, v in os.environ.items() if k != 'TAXI_DATA_DIR'}
    if own: env['TAXI_DATA_DIR'] = str(tmp_path / 'mine')
    expected = {(True, False): tmp_path / 'shared' / 'data', (False, False): checkout / 'data',
                (True, True): tmp_path / 'mine'}[shared, own]
    assert makefile_data_dir(checkout, env) == expected.resolve()
    assert project_data_dir(checkout, env) == expected.resolve()


def test_pytest_lists_what_it_skipped_and_why(tmp_path):
    (tmp_path / 'test_one_skip.py').write_text(
        "import pytest\n\ndef test_needs_something():\n    pytest.skip('the something is not in /where/it/was/looked/for')\n")
    r = make('pytest', f'TESTS={tmp_path}', 'PYTEST_WORKERS=0', env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stdout[-2000:]
    assert 'SKIPPED [1] ' in r.stdout
    assert 'the something is not in /where/it/was/looked/for' in r.stdout


def test_the_data_notebook_passes_with_the_users_own_tlc_mirror_set(real_months):
    "TAXI_TLC_BASE_URL (and the like) set in the shell, as the README documents for a mirror: nbtest still passes."
    env = dict(os.environ, PYTHONPATH=str(ROOT), TAXI_DATA_DIR=str(real_months), **HOSTILE)
    r = make('nbtest', 'NBS=nbs/01_data.ipynb', env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert 'Success' in r.stdout


def test_a_make_a_test_runs_gets_nothing_from_the_outer_make():
    "Under `make test VENV=...` the tests' own makes (`clean` in a scratch folder) see none of that command line."
    assert [k for k in MAKE_SETTINGS if k in os.environ] == []


def test_the_outer_command_line_s_variables_are_named():
    assert outer_make_variables({'MAKEFLAGS': 'j2 --jobserver-auth=fifo:/tmp/x -- VENV=/a/b TESTS=tests'}) == ('VENV', 'TESTS')
    assert outer_make_variables({'MAKEFLAGS': 'j2'}) == ()
