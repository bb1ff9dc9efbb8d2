"""Batch scoring (`taxi-duration score`): every ride of a month, checked by the service's rules, written atomically."""
import argparse
import time

import numpy as np
import pandas as pd
import pytest

from taxi_duration import score as scoring
from taxi_duration.core import TaxiDurationError

COLUMNS = ['ride_id', 'pickup_datetime', 'PULocationID', 'DOLocationID', 'trip_distance', 'actual_duration',
           'predicted_duration', 'predicted_p10', 'predicted_p90', 'used_distance', 'model_version', 'reason', 'field']


def score(*argv, out=print) -> int:
    return scoring.run_score(scoring.add_score_args(argparse.ArgumentParser()).parse_args(list(argv)), out=out)


@pytest.fixture
def champion_env(small_registry, monkeypatch):
    "The environment pointed at the session's small registry (MLFLOW_TRACKING_URI set, MODEL_URI unset)."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', small_registry['tracking_uri'])
    monkeypatch.delenv('MODEL_URI', raising=False)
    return small_registry


@pytest.fixture(scope='module')
def march(real_months):
    "The raw real 2021-03 rides, as the TLC publishes them."
    return pd.read_parquet(real_months / 'green_tripdata_2021-03.parquet')


def test_score_csv_and_file_without_dropoff(champion_env, march, tmp_path):
    rides = march[['lpep_pickup_datetime', 'PULocationID', 'DOLocationID', 'trip_distance']].head(50)
    src = tmp_path / 'to_score.csv'
    rides.to_csv(src, index=False)
    assert score('--data', str(src), '--output', str(tmp_path / 'out.csv')) == 0
    df = pd.read_csv(tmp_path / 'out.csv')
    assert len(df) == 50
    assert df.actual_duration.isna().all()
    assert df.ride_id.iloc[3] == 'to_score_3'
    march.head(50).to_parquet(tmp_path / 'same_rides.parquet')  # the same rides as the TLC's file has them
    same, _ = scoring.score_data(str(tmp_path / 'same_rides.parquet'))
    np.testing.assert_allclose(df.predicted_duration, same.predicted_duration, rtol=1e-12)


def test_a_file_without_distances_is_scored_from_zones_and_times(champion_env, march, tmp_path):
    "No distance column, or gaps in it: every ride is scored, with its range, saying the distance was not used."
    rides = march[['lpep_pickup_datetime', 'lpep_dropoff_datetime', 'PULocationID', 'DOLocationID', 'trip_distance']].head(200)
    rides.drop(columns='trip_distance').to_parquet(tmp_path / 'none.parquet')
    gaps = rides.copy()
    gaps.loc[gaps.index[::2], 'trip_distance'] = np.nan
    gaps.to_parquet(tmp_path / 'gaps.parquet')
    none, s = scoring.score_data(str(tmp_path / 'none.parquet'))
    assert s.scored == 200
    assert not none.used_distance.any()
    assert (none.predicted_p10 <= none.predicted_duration).all()
    assert (none.predicted_duration <= none.predicted_p90).all()
    half, s = scoring.score_data(str(tmp_path / 'gaps.parquet'))
    assert s.scored == 200
    assert half.used_distance.tolist() == [i % 2 == 1 for i in range(200)]
    np.testing.assert_allclose(half.predicted_duration[::2], none.predicted_duration[::2], rtol=1e-12)


def test_rides_the_service_would_refuse_are_written_with_a_reason(champion_env, march, tmp_path):
    raw = march.head(10).copy()
    raw.loc[2, 'PULocationID'] = np.nan
    raw.loc[5, 'DOLocationID'] = 300
    raw.loc[7, 'trip_distance'] = 60_382.0
    raw.to_parquet(tmp_path / 'green_tripdata_2021-03.parquet')
    df, info = scoring.score_data(str(tmp_path / 'green_tripdata_2021-03.parquet'))
    assert info.rows == 10
    assert info.scored == 7
    assert len(df) == 10
    assert df.field[[2, 5, 7]].tolist() == ['PULocationID', 'DOLocationID', 'trip_distance']
    assert df.reason[[2, 5, 7]].tolist() == ['PULocationID must be an integer zone ID from 1 to 265, got null',
                                             'DOLocationID must be an integer zone ID from 1 to 265, got 300',
                                             'trip_distance must be between 0 and 100 miles, got 60382.0']
    assert df.predicted_duration[[2, 5, 7]].isna().all()
    assert (df.reason.drop([2, 5, 7]) == '').all()
    assert (df.field.drop([2, 5, 7]) == '').all()


@pytest.mark.parametrize('argv,fragment', [
    (['--data', 'green:2021-03', '--output', 'preds.txt'], 'must end in .parquet or .csv'),
    (['--data', 'no/such/file.parquet', '--output', 'p.parquet'], 'no such file'),
    (['--data', 'green:2021-03', '--output', 'p.parquet', '--model_uri', 'models:/taxi-duration@nope'], "alias 'nope'"),
])
def test_score_errors(champion_env, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaxiDurationError, match=fragment): score(*argv)
    assert list(tmp_path.iterdir()) == []


def test_no_store_is_an_error(tmp_path, monkeypatch, real_months):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'sqlite:///{tmp_path}/none.db')
    with pytest.raises(TaxiDurationError, match='make run'):
        score('--data', 'green:2021-03', '--output', str(tmp_path / 'p.parquet'))
    assert list(tmp_path.iterdir()) == []


def test_score_full_month(champion_env, real_months, tmp_path):
    "The real 2021-03 month: every ride, in a few seconds (bench/serve.py reports the figure)."
    said = []
    t0 = time.perf_counter()
    assert score('--data', 'green:2021-03', '--output', str(tmp_path / 'preds.parquet'), out=said.append) == 0
    wall = time.perf_counter() - t0
    df = pd.read_parquet(tmp_path / 'preds.parquet')
    assert list(df.columns) == COLUMNS
    assert len(df) == 83_827
    assert df.ride_id.iloc[0] == '2021/03_0'
    assert df.ride_id.is_unique
    assert (df.model_version == champion_env['version']).all()
    assert df.predicted_duration.notna().sum() == 83_803  # 24 rides claim more than 100 miles
    assert said[0].startswith('scored 83,803 of 83,827 rides of green:2021-03')
    assert said[1].startswith('not scored: 24 ride(s) for their trip_distance, e.g. trip_distance must be between 0 and 100 miles')
    assert [p.name for p in tmp_path.iterdir()] == ['preds.parquet']  # no temp file left behind
    assert wall < 60
