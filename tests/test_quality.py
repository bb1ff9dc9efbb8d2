"""Issue 8's quality bars on the real months: train green 2021-01, validate 2021-02, report 2021-03.

One fit shared by the module (≈ 30 s on 2 cores); skipped without ../shared/data.
"""
import numpy as np
import pandas as pd
import pytest

from taxi_duration.features import RIDE_COLUMNS, featurize
from taxi_duration.train import fit_candidate, interval_metrics, metrics, predict

from conftest import FULL_MONTHS, SHARED_DATA


@pytest.fixture(scope='module')
def fitted():
    if not all(p.exists() for p in FULL_MONTHS):
        pytest.skip(f'the full real months are not in {SHARED_DATA} (CI and developer machines have them)')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TAXI_DATA_DIR', str(SHARED_DATA))
        from taxi_duration.data import load
        months = {m: load(f'green:2021-{m}', progress=False)[0] for m in ('01', '02', '03')}
        feats = featurize(months['01'], months['02'])
        pipe, m, _ = fit_candidate(feats, 'gbm')
    mar = months['03']
    both = pd.concat([mar[RIDE_COLUMNS], mar[RIDE_COLUMNS].drop(columns='trip_distance')], ignore_index=True)
    return dict(pipe=pipe, m=m, months=months, march=predict(pipe, both), y=np.r_[mar.duration, mar.duration])


def test_validation_rmse_without_distance(fitted):
    assert fitted['m']['rmse_no_distance'] <= 6.7


def test_validation_rmse_with_distance(fitted):
    assert fitted['m']['rmse'] <= 5.45


def test_march_answers_every_ride_and_says_which_used_the_distance(fitted):
    p, n = fitted['march'], len(fitted['months']['03'])
    assert np.isfinite(p.minutes).all() and p.used_distance[:n].all() and not p.used_distance[n:].any()


def test_coverage_overall(fitted):
    p = fitted['march']
    c = interval_metrics(fitted['y'], p.p10, p.p90)
    print(f"2021-03 coverage {100 * c['coverage_80']:.1f} %, mean width {c['width_80']:.2f} min")
    assert abs(c['coverage_80'] - 0.8) <= 0.02


def test_coverage_with_and_without_distance(fitted):
    p, y = fitted['march'], fitted['y']
    for used in (True, False):
        k = p.used_distance == used
        assert abs(interval_metrics(y[k], p.p10[k], p.p90[k])['coverage_80'] - 0.8) <= 0.05, used


def test_coverage_per_decile_of_prediction(fitted):
    p, y = fitted['march'], fitted['y']
    decile = pd.qcut(p.minutes, 10, labels=False)
    cov = [interval_metrics(y[decile == d], p.p10[decile == d], p.p90[decile == d])['coverage_80'] for d in range(10)]
    assert max(abs(c - 0.8) for c in cov) <= 0.05, cov


def test_pairs_never_seen_together_get_sensible_answers(fitted):
    "March rides between zones never paired in January: answered from geometry, about as well as the rest."
    jan, mar = fitted['months']['01'], fitted['months']['03']
    seen = set(zip(jan.PULocationID, jan.DOLocationID))
    new = mar[[pair not in seen for pair in zip(mar.PULocationID, mar.DOLocationID)]]
    p = predict(fitted['pipe'], new[RIDE_COLUMNS].drop(columns='trip_distance'))
    rmse = metrics(new.duration, p.minutes)['rmse']
    baseline = metrics(new.duration, np.full(len(new), jan.duration.mean()))['rmse']
    print(f'{len(new):,} March rides on unseen pairs: RMSE {rmse:.2f} without distance (mean-only {baseline:.2f})')
    assert len(new) > 100 and np.isfinite(p.minutes).all() and rmse < 0.7 * baseline


def test_interval_travels_inside_the_logged_model(fitted, tracking, monkeypatch):
    "Logged with skops and loaded back, the model gives the same minutes and range, and its run holds the zones."
    import mlflow
    from taxi_duration import zones
    from taxi_duration.train import log_candidate
    monkeypatch.setenv('TAXI_DATA_DIR', str(SHARED_DATA))
    mar = fitted['months']['03']
    from taxi_duration.core import ensure_experiment
    mlflow.set_experiment(experiment_id=ensure_experiment('quality'))
    with mlflow.start_run():
        uri = log_candidate(fitted['pipe'], fitted['m'], mar.duration, fitted['march'].minutes[:len(mar)],
                            mar[RIDE_COLUMNS].head(5), 'gbm', 0.0)
    from taxi_duration.registry import load_model
    loaded = load_model(uri)  # the project's safe loader (skops, trusted types only; MLflow's own loaders are off)
    rides = mar[RIDE_COLUMNS].head(200)
    a, b = predict(fitted['pipe'], rides), predict(loaded, rides)
    assert np.allclose(a.minutes, b.minutes) and np.allclose(a.p10, b.p10) and np.allclose(a.p90, b.p90)
    assert loaded.predict(rides.drop(columns='trip_distance')).shape == (200,)  # the distance is optional
    assert len(zones.load_logged(uri)['svg']['paths']) == 260
