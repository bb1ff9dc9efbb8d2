"""The pipeline on Kubeflow Pipelines: the compiled copy is current, and KFP's local runner runs the compiled YAML
end to end on samples of the real months, recording what MLflow should hold."""
import time
from pathlib import Path

import pytest

from conftest import ROOT, copy_store

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
def local_run(real_months, small_registry, tmp_path_factory):
    """The compiled YAML, loaded back as a component, run once through `kfp.local` (a process-wide singleton) into a
    copy of a registry whose champion is a small gbm: its outputs, seconds and the store's URI. The YAML is what a
    platform team deploys, and `test_compiled_copy_equals_a_fresh_compile` ties it to the pipeline function."""
    from kfp import components, local
    tmp = tmp_path_factory.mktemp('kubeflow')
    uri = copy_store(small_registry, tmp)
    data = dict(train_data='sample:green:2021-01', validation_data='sample:green:2021-02', tracking_uri=uri)
    with pytest.MonkeyPatch.context() as mp:  # the tasks are subprocesses: they inherit this environment
        for k, v in dict(MLFLOW_DISABLE_TELEMETRY='true', DO_NOT_TRACK='true', WHYLOGS_NO_ANALYTICS='1',
                         TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable', OMP_NUM_THREADS='1').items():
            mp.setenv(k, v)
        mp.chdir(tmp)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp / 'artifacts'))
        t0 = time.perf_counter()
        task = components.load_component_from_file(str(COMPILED))(model='ridge', alpha='0.1', **data)
        run = dict(outputs=dict(task.outputs), seconds=time.perf_counter() - t0, tracking_uri=uri)
    print(f"kfp.local: compiled YAML {run['seconds']:.0f} s")
    return run


@pytest.fixture(scope='module')
def mlflow_run(local_run):
    "The client and the MLflow runs the KFP run recorded."
    from mlflow import MlflowClient
    c = MlflowClient(local_run['tracking_uri'])
    exps = [e.experiment_id for e in c.search_experiments()]
    return c, c.search_runs(exps, "tags.pipeline = 'kubeflow'")


def test_the_kfp_run_records_one_finished_mlflow_run(mlflow_run):
    c, runs = mlflow_run
    assert [r.info.status for r in runs] == ['FINISHED']


def test_the_mlflow_run_names_its_kfp_run(mlflow_run):
    c, (run,) = mlflow_run
    assert run.data.tags.get('kfp_run_name', '').startswith('taxi-duration-')


def test_the_mlflow_run_holds_the_four_executed_steps(mlflow_run):
    c, (run,) = mlflow_run
    assert STEP_NOTEBOOKS <= {a.path for a in c.list_artifacts(run.info.run_id, 'steps')}
    assert {f'step_seconds_{Path(p).stem}' for p in STEP_NOTEBOOKS} <= set(run.data.metrics)


def test_the_last_step_outputs_the_registered_version(local_run, mlflow_run):
    c, (run,) = mlflow_run
    assert local_run['outputs']['version'] == '2'  # after the registry's champion, version 1
    assert run.data.tags['model_version'] == '2'


def test_champion_is_what_the_registry_rule_decides(local_run):
    from mlflow import MlflowClient
    from taxi_duration.core import MODEL_NAME
    from taxi_duration.registry import decide
    c = MlflowClient(local_run['tracking_uri'])
    second = c.get_model_version(MODEL_NAME, '2')
    promote, _ = decide(float(second.tags['validation_rmse']), float(second.tags['champion_rmse']))
    assert local_run['outputs']['promoted'] is promote
    assert str(c.get_model_version_by_alias(MODEL_NAME, 'champion').version) == ('2' if promote else '1')
