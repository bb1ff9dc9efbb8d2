"""Closing the loop: a performance alert with --retrain runs the pipeline on the newer rides and
promotes the challenger only if it beats the champion on the same validation data."""
import pytest

from taxi_duration.data import read_trips
from taxi_duration.registry import champion

from conftest import DATA_DIR, copy_store
from monitor_fixtures import in_process_champion, run_cli, sample_file
from scenarios import make_scenario


def _champion_env(monkeypatch, tmp_path):
    "Monitoring output in the test's folder, the real months, no webhook."
    monkeypatch.setenv('MONITORING_DIR', str(tmp_path / 'monitoring'))
    monkeypatch.setenv('TAXI_DATA_DIR', str(DATA_DIR))
    monkeypatch.delenv('ALERT_WEBHOOK_URL', raising=False)


@pytest.fixture(scope='module')
def _kept_registry(empty_store, tmp_path_factory):
    """A registry whose champion was fitted in-process on a seeded 4,000-ride sample of January: about as many rides as
    a retrain on a 4,000-ride batch trains on (three quarters of it), so a challenger that beats it does so by learning
    the newer rides, not by seeing more of them. Made once for the module. Returns dict(tracking_uri=...)."""
    tmp = tmp_path_factory.mktemp('kept-champion')
    with pytest.MonkeyPatch.context() as mp:
        uri = empty_store(tmp)
        mp.setenv('MLFLOW_TRACKING_URI', uri)
        mp.chdir(tmp)
        _champion_env(mp, tmp)
        in_process_champion(n_train=4000)
    return dict(tracking_uri=uri)


@pytest.fixture
def sample_champion(_kept_registry, tmp_path, monkeypatch):
    "A private copy of that registry (`conftest.copy_store`): this test promotes into it."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', copy_store(_kept_registry, tmp_path))
    monkeypatch.chdir(tmp_path)  # the retrained model's files go to ./mlruns here
    _champion_env(monkeypatch, tmp_path)


@pytest.fixture
def kept_champion(_kept_registry, tmp_path, monkeypatch):
    "That registry itself, shared: for tests whose point is that nothing is promoted into it."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', _kept_registry['tracking_uri'])
    _champion_env(monkeypatch, tmp_path)


def test_retrain_on_a_performance_alert_promotes_a_better_challenger(sample_champion, tmp_path, capsys):
    slow = tmp_path / 'slow.parquet'
    make_scenario(read_trips(sample_file('03', tmp_path)), 'slower').to_parquet(slow)
    code = run_cli('--data', str(slow), '--retrain', '--report', str(tmp_path / 'r.html'))
    out = capsys.readouterr().out
    assert code == 3
    assert 'retrain: challenger' in out, out
    assert 'PROMOTED to champion' in out, out
    assert str(champion().version) == '2'
    kept = list((tmp_path / 'monitoring' / 'retrain').glob('*/*.parquet'))
    assert {p.name for p in kept} == {'train.parquet', 'validation.parquet'}
    # the new champion has its own reference, and judges the slow rides healthy
    assert run_cli('--data', str(slow), '--report', str(tmp_path / 'after.html')) == 0


def test_drift_alone_does_not_retrain(kept_champion, tmp_path, capsys):
    km = tmp_path / 'km.parquet'
    make_scenario(read_trips(sample_file('03', tmp_path)), 'zones_scrambled').to_parquet(km)
    code = run_cli('--data', str(km), '--retrain', '--threshold', 'rmse_ratio=10', '--threshold', 'mae_ratio=10',
                   '--threshold', 'coverage_drop=1', '--report', str(tmp_path / 'r.html'))
    assert code == 3
    assert 'not retraining' in capsys.readouterr().out
    assert str(champion().version) == '1'


def test_broken_inputs_are_never_retrained_on(kept_champion, tmp_path, capsys):
    "Distances in km make the errors jump (a performance alert), but a model trained on them would learn the breakage."
    km = tmp_path / 'km.parquet'
    make_scenario(read_trips(sample_file('03', tmp_path)), 'km').to_parquet(km)
    code = run_cli('--data', str(km), '--retrain', '--report', str(tmp_path / 'r.html'))
    out = capsys.readouterr().out
    assert code == 3
    assert 'retrain: refused: the inputs look broken' in out, out
    assert 'drift trip_distance' in out, out
    assert str(champion().version) == '1'
    assert not (tmp_path / 'monitoring' / 'retrain').exists()
