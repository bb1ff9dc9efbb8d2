"""Batch scoring (`taxi-duration score`): every ride of a month, written atomically."""
import argparse
import time

import numpy as np
import pandas as pd
import pytest

from taxi_duration import serve
from taxi_duration.core import TaxiDurationError

COLUMNS = ['ride_id', 'pickup_datetime', 'PULocationID', 'DOLocationID', 'trip_distance', 'actual_duration',
           'predicted_duration', 'model_version']


def score(*argv) -> int:
    return serve.run_score(serve.add_score_args(argparse.ArgumentParser()).parse_args(list(argv)))


def test_score_sample(champion_env, tmp_path, capsys):
    out = tmp_path / 'preds.parquet'
    assert score('--data', 'sample:green:2021-03', '--output', str(out)) == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS and len(df) == 4000 and df.ride_id.is_unique
    assert df.ride_id.str.match(r'^2021/03-sample_\d+$').all()
    assert (df.model_version == champion_env['version']).all() and np.isfinite(df.predicted_duration).all()
    assert 'scored 4,000 of 4,000 rides of sample:green:2021-03' in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ['preds.parquet']  # no temp file left behind


def test_score_csv_and_file_without_dropoff(champion_env, tmp_path):
    from taxi_duration.data import resolve
    raw = pd.read_parquet(resolve('sample:green:2021-03'))
    rides = raw[['lpep_pickup_datetime', 'PULocationID', 'DOLocationID', 'trip_distance']].head(50)
    src = tmp_path / 'to_score.csv'
    rides.to_csv(src, index=False)
    assert score('--data', str(src), '--output', str(tmp_path / 'out.csv')) == 0
    df = pd.read_csv(tmp_path / 'out.csv')
    assert len(df) == 50 and df.actual_duration.isna().all() and df.ride_id.iloc[3] == 'to_score_3'
    full, _ = serve.score_data('sample:green:2021-03')
    np.testing.assert_allclose(df.predicted_duration, full.predicted_duration.head(50), rtol=1e-12)


def test_rows_without_inputs_are_skipped(champion_env, tmp_path):
    from taxi_duration.data import resolve
    raw = pd.read_parquet(resolve('sample:green:2021-03')).head(10)
    raw.loc[[2, 5], 'PULocationID'] = np.nan
    raw.to_parquet(tmp_path / 'green_tripdata_2021-03.parquet')
    df, info = serve.score_data(str(tmp_path / 'green_tripdata_2021-03.parquet'))
    assert info['rows'] == 10 and info['scored'] == 8 and '2021/03_2' not in set(df.ride_id)


@pytest.mark.parametrize('argv,fragment', [
    (['--data', 'sample:green:2021-03', '--output', 'preds.txt'], 'must end in .parquet or .csv'),
    (['--data', 'no/such/file.parquet', '--output', 'p.parquet'], 'no such file'),
    (['--data', 'sample:green:2021-03', '--output', 'p.parquet', '--model_uri', 'models:/taxi-duration@nope'], "alias 'nope'"),
])
def test_score_errors(champion_env, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaxiDurationError, match=fragment): score(*argv)
    assert list(tmp_path.iterdir()) == []


def test_no_store_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'sqlite:///{tmp_path}/none.db')
    with pytest.raises(TaxiDurationError, match='make run'):
        score('--data', 'sample:green:2021-03', '--output', str(tmp_path / 'p.parquet'))
    assert list(tmp_path.iterdir()) == []


def test_score_full_month(champion_env, full_data_dir, tmp_path, monkeypatch, capsys):
    "The real 2021-03 month: every ride, in a few seconds (bench/serve.py reports the figure)."
    monkeypatch.setenv('TAXI_DATA_DIR', str(full_data_dir))
    t0 = time.perf_counter()
    assert score('--data', 'green:2021-03', '--output', str(tmp_path / 'preds.parquet')) == 0
    wall = time.perf_counter() - t0
    df = pd.read_parquet(tmp_path / 'preds.parquet')
    assert len(df) == 83_827 and df.ride_id.iloc[0] == '2021/03_0' and df.ride_id.is_unique
    usual = df.actual_duration.between(1, 60)
    assert usual.sum() == 80_372
    rmse = float(np.sqrt(((df.predicted_duration - df.actual_duration)[usual] ** 2).mean()))
    assert rmse < 6.5, rmse
    print(capsys.readouterr().out, f'wall {wall:.1f} s')
    assert wall < 60
