"""The quality bars on the real months: train green 2021-01, validate 2021-02, report 2021-03.

Measured on the champion the real pipeline trained (the session's `trained_store`), loaded back from MLflow by
the project's safe loader: the bars hold for what is served, not for a copy fitted beside it.
Skipped, saying where they were looked for, without the real months.
"""
import numpy as np
import pandas as pd
import pytest

from taxi_duration.rides import RIDE_COLUMNS
from taxi_duration.train import interval_metrics, metrics, predict


@pytest.fixture(scope='module')
def fitted(trained_store, real_months):
    import mlflow
    from taxi_duration.data import load
    from taxi_duration.registry import load_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TAXI_DATA_DIR', str(real_months))
        mp.setenv('MLFLOW_TRACKING_URI', trained_store['tracking_uri'])
        months = {m: load(f'green:2021-{m}', progress=False)[0] for m in ('01', '02', '03')}
        uri = f"models:/taxi-duration/{trained_store['version']}"
        pipe = load_model(uri)
        m = mlflow.MlflowClient().get_run(trained_store['run_id']).data.metrics
    mar = months['03']
    both = pd.concat([mar[RIDE_COLUMNS], mar[RIDE_COLUMNS].drop(columns='trip_distance')], ignore_index=True)
    return dict(pipe=pipe, m=m, uri=uri, store=trained_store['tracking_uri'], months=months,
                march=predict(pipe, both), y=np.r_[mar.duration, mar.duration])


def test_validation_rmse_without_distance(fitted):
    assert fitted['m']['rmse_no_distance'] <= 6.7


def test_validation_rmse_with_distance(fitted):
    assert fitted['m']['rmse'] <= 5.45


def test_march_answers_every_ride_and_says_which_used_the_distance(fitted):
    p, n = fitted['march'], len(fitted['months']['03'])
    assert np.isfinite(p.minutes).all()
    assert p.used_distance[:n].all()
    assert not p.used_distance[n:].any()


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
    assert len(new) > 100
    assert np.isfinite(p.minutes).all()
    assert rmse < 0.7 * baseline


def test_the_logged_model_predicts_what_was_measured_before_logging(fitted):
    "Loaded back from MLflow (skops), the model gives the validation RMSE the train step measured in memory."
    feb = fitted['months']['02']
    assert metrics(feb.duration, predict(fitted['pipe'], feb[RIDE_COLUMNS]).minutes)['rmse'] == \
        pytest.approx(fitted['m']['rmse'], abs=1e-9)


def test_the_distance_is_optional_for_the_logged_model(fitted):
    rides = fitted['months']['03'][RIDE_COLUMNS].head(200)
    assert fitted['pipe'].predict(rides.drop(columns='trip_distance')).shape == (200,)


def test_the_zone_shapes_travel_with_the_logged_model(fitted, monkeypatch):
    from taxi_duration import zones
    monkeypatch.setenv('MLFLOW_TRACKING_URI', fitted['store'])
    assert len(zones.load_logged(fitted['uri'])['svg']['paths']) == 260
