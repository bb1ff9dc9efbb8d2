"""The pipeline on Kubeflow Pipelines: the compiled copy is current, and KFP's local runner runs the pipeline
function and the compiled YAML end to end on samples of the real months, recording what MLflow should hold."""
import time
from pathlib import Path

import pytest

from conftest import NO_DATA, ROOT, have_real_months, new_store

COMPILED = ROOT / 'deploy' / 'kubeflow' / 'pipeline.yaml'
STEP_NOTEBOOKS = {f'steps/{nb}.ipynb' for nb in ('01_data', '02_features', '03_train', '04_registry')}


def test_compiled_copy_equals_a_fresh_compile(tmp_path):
    from taxi_duration.cli import main
    assert main(['kubeflow', 'compile', '--output', str(tmp_path / 'pipeline.yaml')]) == 0
    assert (tmp_path / 'pipeline.yaml').read_text() == COMPILED.read_text(), \
        'deploy/kubeflow/pipeline.yaml is stale: run taxi-duration kubeflow compile --output deploy/kubeflow/pipeline.yaml'


def test_compiled_copy_parses_as_a_pipeline_spec():
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    spec = json_format.ParseDict(yaml.safe_load(COMPILED.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert set(spec.root.dag.tasks) == {'load-prepare', 'vectorise', 'train', 'register'}


@pytest.fixture(scope='module')
def local_runs(tmp_path_factory):
    """Two runs in one MLflow store through `kfp.local` (set up once: it is a process-wide singleton): the
    pipeline function (linear), then the compiled YAML loaded back as a component (ridge). Each run's outputs,
    seconds and the store's URI."""
    if not have_real_months(2): pytest.skip(NO_DATA)
    from kfp import components, local
    tmp = tmp_path_factory.mktemp('kubeflow')
    uri = new_store(tmp)
    data = dict(train_data='sample:green:2021-01', validation_data='sample:green:2021-02', tracking_uri=uri)
    with pytest.MonkeyPatch.context() as mp:  # the tasks are subprocesses: they inherit this environment
        for k, v in dict(MLFLOW_DISABLE_TELEMETRY='true', DO_NOT_TRACK='true', WHYLOGS_NO_ANALYTICS='1',
                         TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable', OMP_NUM_THREADS='1').items():
            mp.setenv(k, v)
        mp.chdir(tmp)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp / 'artifacts'))
        from taxi_duration.kubeflow import make_pipeline
        runs = []
        for pipeline, model, alpha in [(make_pipeline(), 'linear', ''),
                                       (components.load_component_from_file(str(COMPILED)), 'ridge', '0.1')]:
            t0 = time.perf_counter()
            task = pipeline(model=model, alpha=alpha, **data)
            runs.append(dict(outputs=dict(task.outputs), seconds=time.perf_counter() - t0))
    print(f"kfp.local: pipeline function {runs[0]['seconds']:.0f} s, compiled YAML {runs[1]['seconds']:.0f} s")
    return dict(runs=runs, tracking_uri=uri)


@pytest.fixture(scope='module')
def mlflow_runs(local_runs):
    "The MLflow runs the two KFP runs recorded, oldest first."
    from mlflow import MlflowClient
    c = MlflowClient(local_runs['tracking_uri'])
    exps = [e.experiment_id for e in c.search_experiments()]
    return c, c.search_runs(exps, "tags.pipeline = 'kubeflow'", order_by=['attributes.start_time ASC'])


def test_each_kfp_run_records_one_finished_mlflow_run(mlflow_runs):
    c, runs = mlflow_runs
    assert [r.info.status for r in runs] == ['FINISHED', 'FINISHED']


def test_the_mlflow_run_names_its_kfp_run(mlflow_runs):
    c, runs = mlflow_runs
    names = [r.data.tags.get('kfp_run_name', '') for r in runs]
    assert all(n.startswith('taxi-duration-') for n in names), names
    assert names[0] != names[1]


@pytest.mark.parametrize('i', [0, 1])
def test_the_mlflow_run_holds_the_four_executed_steps(mlflow_runs, i):
    c, runs = mlflow_runs
    rid = runs[i].info.run_id
    assert STEP_NOTEBOOKS <= {a.path for a in c.list_artifacts(rid, 'steps')}
    assert {f'step_seconds_{Path(p).stem}' for p in STEP_NOTEBOOKS} <= set(runs[i].data.metrics)


def test_the_last_step_outputs_the_registered_version_and_decision(local_runs, mlflow_runs):
    c, runs = mlflow_runs
    outputs = [r['outputs'] for r in local_runs['runs']]
    assert [o['version'] for o in outputs] == ['1', '2']
    assert [r.data.tags['model_version'] for r in runs] == ['1', '2']
    assert outputs[0]['promoted'] is True  # an empty registry: the first model becomes champion


def test_champion_is_what_the_registry_rule_decides(local_runs, mlflow_runs):
    from taxi_duration.core import MODEL_NAME
    from taxi_duration.registry import decide
    c, runs = mlflow_runs
    second = c.get_model_version(MODEL_NAME, '2')
    promote, _ = decide(float(second.tags['validation_rmse']), float(second.tags['champion_rmse']))
    assert local_runs['runs'][1]['outputs']['promoted'] is promote
    assert str(c.get_model_version_by_alias(MODEL_NAME, 'champion').version) == ('2' if promote else '1')
