"""The pipeline end to end: CLI, papermill steps, MLflow tracking, registry rules, failures."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import copy_store
from taxi_duration.cli import main
from taxi_duration.pipeline import notebooks_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLES = ['--train_data=sample:green:2021-01', '--validation_data=sample:green:2021-02']


def client(uri):
    return MlflowClient(uri, registry_uri=uri)


def versions(uri, name='taxi-duration'):
    return sorted(int(v.version) for v in client(uri).search_model_versions(f"name='{name}'"))


def alias(uri, which, name='taxi-duration'):
    return int(client(uri).get_model_version_by_alias(name, which).version)


def test_full_months_reach_the_quality_bar_and_log_everything(trained_store, monkeypatch):
    "The pipeline on the real January/February: gbm registered as champion v1, RMSE under the bar, all logged."
    import nbformat  # here, not at collection: it costs every pytest worker a CPU-second
    r, uri = trained_store, trained_store['tracking_uri']
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    assert not (ROOT / 'mlruns').exists() or not any((ROOT / 'mlruns').iterdir())  # artifacts live beside the store
    assert r['full']
    assert r['model'] == 'gbm'
    assert r['promoted']
    assert r['version'] == '1'
    assert r['rmse'] <= 5.6, r['rmse']                      # the quality bar (the course's best XGBoost: 6.304)
    c = client(uri)
    run = c.get_run(r['run_id'])
    p, m = run.data.params, run.data.metrics
    assert p['model'] == 'gbm'
    assert p['train_data'] == 'green:2021-01'
    assert p['validation_data'] == 'green:2021-02'
    assert p['train_sha256'] == 'b8e2c9496c5eada0f10adbd88f98d91721ec6fe2787a2b355cf0ccfa9678ee7b'
    assert p['train_rows_raw'] == '76518'
    assert p['train_rows_kept'] == '73846'
    assert p['validation_rows_raw'] == '64572'
    assert p['validation_rows_kept'] == '61895'
    assert {'rmse', 'mae', 'r2', 'train_rmse'} <= set(m)
    assert m['rmse'] == pytest.approx(r['rmse'])
    assert run.data.tags['data_is_sample'] == 'false'
    assert run.data.tags.get('mlflow.source.git.commit')
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {'green:2021-01', 'green:2021-02'}
    arts = {a.path for a in c.list_artifacts(r['run_id'])} | {a.path for a in c.list_artifacts(r['run_id'], 'steps')}
    assert {'predicted_vs_actual.png', 'steps/01_data.ipynb', 'steps/02_features.ipynb',
            'steps/03_train.ipynb', 'steps/04_registry.ipynb'} <= arts
    # the executed notebook is a readable lab-book page: it shows the step's own printout
    nb = nbformat.reads(Path(c.download_artifacts(r['run_id'], 'steps/03_train.ipynb')).read_text(), 4)
    assert any('validation rmse' in o.get('text', '') for cell in nb.cells for o in cell.get('outputs', []))
    mv = c.get_model_version_by_alias('taxi-duration', 'champion')
    assert mv.tags['validation_sha256'] == p['validation_sha256']
    assert float(mv.tags['validation_rmse']) == pytest.approx(r['rmse'])
    # the logged model has a signature over the request fields
    from mlflow.models import get_model_info
    info = get_model_info(f'models:/taxi-duration/{mv.version}')
    assert [c['name'] for c in info.signature.inputs.to_dict()] == ['PULocationID', 'DOLocationID', 'trip_distance', 'pickup_datetime']


def test_linear_course_model_is_registered_as_challenger_and_does_not_unseat_the_champion(trained_store, real_months, monkeypatch,
                                                                              capsys):
    "The course's linear model, on the rides the ride contract answers, scores RMSE 6.7475, is registered as challenger, and the gbm champion stays."
    uri = trained_store['tracking_uri']
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.setenv('TAXI_DATA_DIR', str(real_months))
    before = versions(uri)
    assert main(['pipeline', '--train_data=green:2021-01', '--validation_data=green:2021-02', '--model=linear']) == 0
    out = capsys.readouterr().out
    # the course's 7.7587 counts the 62 + 26 rides outside the ride contract (distances of thousands of miles): nbs/00a_rides
    assert 'rmse 6.7475' in out
    assert 'champion unchanged' in out
    assert 'as logged on the same validation file' in out
    assert versions(uri) == before + [before[-1] + 1]
    assert alias(uri, 'champion') == 1
    assert alias(uri, 'challenger') == before[-1] + 1


def test_alpha_sweep_groups_child_runs_and_registers_the_best(real_months, tracking, capsys):
    "Three alphas: one parent run with three children; the best child is the champion and the parent carries its RMSE."
    assert main(['pipeline', *SAMPLES, '--model=ridge', '--alpha=0.0001,0.001,0.01']) == 0
    out = capsys.readouterr().out
    c = client(tracking)
    exp = c.get_experiment_by_name('taxi-duration')
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if 'mlflow.parentRunId' not in r.data.tags]
    children = [r for r in runs if 'mlflow.parentRunId' in r.data.tags]
    assert len(parents) == 1
    assert len(children) == 3
    assert {r.data.tags['mlflow.parentRunId'] for r in children} == {parents[0].info.run_id}
    assert sorted(float(r.data.params['alpha']) for r in children) == [0.0001, 0.001, 0.01]
    best = min(children, key=lambda r: r.data.metrics['rmse'])
    mv = c.get_model_version_by_alias('taxi-duration', 'champion')
    assert mv.run_id == best.info.run_id
    assert parents[0].data.metrics['rmse'] == best.data.metrics['rmse']
    assert parents[0].data.tags['data_is_sample'] == 'true'
    assert f"alpha={best.data.params['alpha']}" in out


def test_card_papermill_form_from_the_repo_root(tmp_path, real_months):
    "A step notebook run by papermill itself from the repository root, with a parameter: a tracked run."
    env = dict(os.environ, MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db', TAXI_DATA_DIR=str(real_months),
               PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}')
    p = subprocess.run([str(BIN / 'papermill'), '-k', 'python3', 'nbs/03_train.ipynb', str(tmp_path / 'out.ipynb'),
                        '-p', 'alpha', '0.01'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)  # a bound on a hang: a loaded 2-core machine took 598 s
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'Unable to parse' not in p.stderr
    assert 'unknown parameter' not in p.stderr
    c = client(env['MLFLOW_TRACKING_URI'])
    [run] = c.search_runs([c.get_experiment_by_name('taxi-duration').experiment_id])
    assert run.data.params['alpha'] == '0.01'
    assert run.data.params['train_data'] == 'green:2021-01'
    assert run.data.metrics['rmse'] < 5.6
    assert run.info.run_name == 'train-gbm'  # named like the pipeline's runs, not a random name


@pytest.fixture(scope='module')
def sample_store(trained_store, tmp_path_factory):
    "A private copy of the session's store: its champion (v1) trained by the pipeline on the real months."
    return copy_store(trained_store, tmp_path_factory.mktemp('store-copy'))


@pytest.fixture
def store(sample_store, monkeypatch, tmp_path):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', sample_store)
    monkeypatch.chdir(tmp_path)
    return sample_store


def last_run(uri):
    c = client(uri)
    return c.search_runs([c.get_experiment_by_name('taxi-duration').experiment_id], order_by=['attributes.start_time DESC'],
                         max_results=1)[0]


def error_line(err):
    "The error must be one line, the last one, with no traceback anywhere."
    lines = err.strip().splitlines()
    assert 'Traceback' not in err
    assert sum(l.startswith('taxi-duration: error:') for l in lines) == 1
    assert lines[-1].startswith('taxi-duration: error:')
    return lines[-1]


def _wrong_schema(tmp):
    pd.DataFrame({'fare_amount': [1.0, 2.0]}).to_parquet(tmp / 'fares.parquet'); return str(tmp / 'fares.parquet')


def _all_too_short(tmp):
    from taxi_duration.data import resolve
    raw = pd.read_parquet(resolve('sample:green:2021-01'))
    raw['lpep_dropoff_datetime'] = raw['lpep_pickup_datetime']
    raw.to_parquet(tmp / 'zero.parquet'); return str(tmp / 'zero.parquet')


def _tiny(tmp):
    from taxi_duration.data import prepare, read_trips, resolve
    raw = pd.read_parquet(resolve('sample:green:2021-01'))
    keep = prepare(read_trips(resolve('sample:green:2021-01'))).index[:40]
    raw.loc[keep].to_parquet(tmp / 'tiny.parquet'); return str(tmp / 'tiny.parquet')


def _unreadable(tmp):
    (tmp / 'junk.parquet').write_bytes(b'PAR1 this is not parquet'); return str(tmp / 'junk.parquet')


@pytest.mark.parametrize('args, message', [
    (['--train_data=nowhere.parquet'], 'no such file: nowhere.parquet'),
    (['--train_data=green:2012-01'], 'TLC does not publish green 2012-01'),
    (['--train_data=green:2030-01'], 'TLC does not publish green 2030-01'),
    (['--model=xgboost'], "unknown model 'xgboost'"),
    (['--model=ridge', '--alpha=-0.1'], 'alpha must be a finite number >= 0'),
    (['--model=linear', '--alpha=0.1'], "model 'linear' has no alpha"),
    ([_wrong_schema], 'missing column(s) pickup_datetime'),
    ([_unreadable], 'cannot read'),
    ([_all_too_short], '0 rides left after keeping 1-60 minute trips'),
    ([_tiny], '40 rides left after keeping 1-60 minute trips (40 rows read); need at least 100'),
    (['--validation_data=sample:green:2021-01'], 'are the same file'),
])
def test_bad_input_is_one_line_exit_2_and_nothing_registered(store, tmp_path, capsys, args, message):
    "A bad argument or file: exit 2, one line naming the problem, no new version, the champion unchanged."
    args = [a if isinstance(a, str) else f'--train_data={a(tmp_path)}' for a in args]
    before = versions(store)
    assert main(['pipeline', *SAMPLES, *args]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert versions(store) == before
    assert alias(store, 'champion') == 1


def _steps_with(tmp_path, monkeypatch, name: str, change):
    "A copy of the step notebooks with `change(nb)` made to step `name`, in force through TAXI_DURATION_NBS."
    import nbformat  # here, not at collection: it costs every pytest worker a CPU-second
    broken = tmp_path / 'nbs'
    shutil.copytree(notebooks_dir(), broken)
    nb = nbformat.read(broken / f'{name}.ipynb', 4)
    change(nb)
    nbformat.write(nb, broken / f'{name}.ipynb')
    monkeypatch.setenv('TAXI_DURATION_NBS', str(broken))


def test_a_failing_middle_step_fails_the_run_and_keeps_the_champion(store, tmp_path, monkeypatch, capsys):
    "A step that raises: exit 1, one line naming the step, the run FAILED with the steps that ran, the champion kept."
    def fail(nb): nb.cells[-1].source = "#| eval: false\nraise RuntimeError('disk full while writing features')"
    _steps_with(tmp_path, monkeypatch, '02_features', fail)
    before = versions(store)
    assert main(['pipeline', *SAMPLES]) == 1
    assert 'step vectorise failed: RuntimeError: disk full while writing features' in error_line(capsys.readouterr().err)
    assert versions(store) == before
    assert alias(store, 'champion') == 1
    run = last_run(store)
    assert run.info.status == 'FAILED'
    arts = {a.path for a in client(store).list_artifacts(run.info.run_id, 'steps')}
    assert {'steps/01_data.ipynb', 'steps/02_features.ipynb'} <= arts
    assert 'steps/03_train.ipynb' not in arts


def _probe_steps(folder: Path, flaky: str):
    "Four step notebooks that each record (kernel pid, whether the last step's variable is visible); `flaky` fails once."
    import nbformat  # here, not at collection: it costs every pytest worker a CPU-second
    from taxi_duration.pipeline import STEPS
    folder.mkdir()
    for i, (_, name) in enumerate(STEPS):
        params = nbformat.v4.new_code_cell("work_dir = ''")
        params.metadata['tags'] = ['parameters']
        fail = f"if not os.path.exists(f'{{work_dir}}/failed'): open(f'{{work_dir}}/failed', 'w'); raise OSError('flaky')"
        body = ("#| eval: false\nimport json, os\n"
                "open(f'{work_dir}/seen.jsonl', 'a').write(json.dumps([os.getpid(), 'left' in globals()]) + '\\n')\n"
                f"left = {i}\n" + (fail if name == flaky else ''))
        step = nbformat.v4.new_code_cell(body)
        step.metadata['tags'] = ['step']  # the step contract (05_pipeline)
        nb = nbformat.v4.new_notebook(cells=[params, step], metadata={
            'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}})
        nbformat.write(nb, folder / f'{name}.ipynb')


def test_steps_share_one_kernel_with_an_empty_namespace_and_a_retry_gets_a_new_one(tracking, tmp_path):
    "The four steps run in one kernel, each seeing none of the previous one's variables; a step run again gets a new kernel."
    import json
    from taxi_duration.core import ensure_experiment
    from taxi_duration.pipeline import STEPS, _run_steps
    _probe_steps(tmp_path / 'steps', flaky='02_features')
    c = client(tracking)
    run_id = c.create_run(ensure_experiment()).info.run_id
    def retry_once(label, nb, run_id, run):  # as the Prefect flow retries a step
        try: run()
        except Exception: run()
    (tmp_path / 'work').mkdir()
    _run_steps(c, run_id, tmp_path / 'steps', tmp_path / 'work', {nb: {} for _, nb in STEPS}, log=lambda s: None,
               step_hook=retry_once)
    seen = [json.loads(l) for l in (tmp_path / 'work' / 'seen.jsonl').read_text().splitlines()]
    pids = [pid for pid, _ in seen]  # 01, 02 (failed), 02 again, 03, 04
    assert pids[0] == pids[1]
    assert pids[2] != pids[1]
    assert pids[3] == pids[2]
    assert pids[4] == pids[2]
    assert [left for _, left in seen] == [False] * 5


def test_a_step_notebook_papermill_refuses_is_one_line_not_a_traceback(store, tmp_path, monkeypatch, capsys):
    "A step notebook papermill cannot run (no kernel language): exit 1 and one line."
    _steps_with(tmp_path, monkeypatch, '01_data', lambda nb: nb.metadata.pop('kernelspec'))  # no language known
    assert main(['pipeline', *SAMPLES]) == 1
    assert 'step load & prepare failed: ValueError: No language found in notebook' in error_line(capsys.readouterr().err)


def test_offline_without_the_files_stops_with_one_line_saying_where_to_put_them(tmp_path):
    "`make run` on a machine without network and without the months: the real CLI, one line, exit 2."
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db',
               TAXI_DATA_DIR=str(tmp_path / 'data'), TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable')
    p = subprocess.run([str(BIN / 'taxi-duration'), 'pipeline', '--train_data=green:2021-01',
                        '--validation_data=green:2021-02'], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith('taxi-duration: error: cannot download green_tripdata_2021-01.parquet and '
                           'green_tripdata_2021-02.parquet'), line
    assert f"put them in {tmp_path / 'data'}" in line
    assert 'https://d37ci6vzurychx.cloudfront.net/trip-data/' in line
    assert not (tmp_path / 'data').exists() or list((tmp_path / 'data').iterdir()) == []
    assert not (tmp_path / 'mlflow.db').exists()  # nothing started


def test_the_fallback_to_a_shipped_sample_is_gone(capsys):
    "The repository ships no data: there is no option to fall back to a sample of it."
    assert main(['pipeline', '--fallback-sample']) == 2
    assert 'unrecognized arguments: --fallback-sample' in capsys.readouterr().err


def test_telemetry_is_off_by_default_but_user_choice_wins():
    "Importing the package turns MLflow's, whylogs' and the generic telemetry off, unless the user said otherwise."
    code = "import os, taxi_duration; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['WHYLOGS_NO_ANALYTICS'], os.environ['DO_NOT_TRACK'])"
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_DISABLE_TELEMETRY', 'WHYLOGS_NO_ANALYTICS', 'DO_NOT_TRACK')}
    assert subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True).stdout.split() == ['true', '1', 'true']
    env['DO_NOT_TRACK'] = 'false'
    assert subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True).stdout.split()[2] == 'false'
