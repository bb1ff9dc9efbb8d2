"""Batch scoring on a real Spark (local[2]): the same predictions as the pandas engine, a partitioned dataset.

One SparkSession per module (stopped after); the session's small champion (conftest `small_registry`); scored:
3,000 February and 25,000 March rides (March in two tasks of 12,500 rides, each more than one chunk).
"""
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import REAL_MONTHS, copy_store

pytest.importorskip('pyspark', reason="pyspark is not installed: pip install 'taxi-duration[spark]'")
pytestmark = pytest.mark.skipif(not shutil.which('java'), reason='Spark needs Java 17 (.ci/run installs it)')


@pytest.fixture(scope='module')
def store(real_months, small_registry, tmp_path_factory):
    "A copy of the session's small registry (a champion), and small real months as files; the environment pointed at it."
    tmp = tmp_path_factory.mktemp('spark')
    uri = copy_store(small_registry, tmp)
    files = {}
    for p in REAL_MONTHS:
        files[p.stem[-7:]] = tmp / p.name
        n = 25_000 if p.stem.endswith('03') else 3000  # March: two pieces, each more than one chunk (spark.CHUNK)
        pd.read_parquet(p).sample(n, random_state=2).to_parquet(files[p.stem[-7:]])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MLFLOW_TRACKING_URI', uri)
        mp.chdir(tmp)
        yield dict(tmp=tmp, files=files)


@pytest.fixture(scope='module')
def spark():
    from taxi_duration.spark import spark_session
    s = spark_session('local[2]')
    yield s
    s.stop()


def test_spark_equals_pandas(store, spark, monkeypatch):
    from taxi_duration import score
    from taxi_duration.spark import score_spark
    monkeypatch.setattr('taxi_duration.spark.PIECE', 20_000)  # March in two tasks
    srcs = [str(store['files']['2021-02']), str(store['files']['2021-03'])]
    r = score_spark(srcs, store['tmp'] / 'out', spark=spark)
    got = pd.read_parquet(store['tmp'] / 'out')
    want = pd.concat([score.score_data(s)[0] for s in srcs], ignore_index=True)
    m = want.merge(got, on='ride_id', suffixes=('', '_spark'), validate='one_to_one')
    assert len(m) == len(want)  # every ride scored by both engines, once
    assert r['rows'] == len(want)
    assert r['scored'] == want.predicted_duration.notna().sum()  # rides predicted, as score.Scored.scored
    for c in ('predicted_duration', 'predicted_p10', 'predicted_p90'):  # exactly; a refused ride is NaN on both
        assert np.array_equal(m[c].to_numpy(float), m[c + '_spark'].to_numpy(float), equal_nan=True), c
    assert (m.reason == m.reason_spark).all()
    assert (m.field == m.field_spark).all()


def test_dataset_is_partitioned_by_source(store):
    assert sorted(p.name for p in (store['tmp'] / 'out').glob('source=*')) == \
        ['source=green_tripdata_2021-02', 'source=green_tripdata_2021-03']


def test_a_file_in_pieces(store):
    "March (25,000 rides, PIECE 20,000) was scored by two tasks: two files in its partition."
    assert len(list((store['tmp'] / 'out' / 'source=green_tripdata_2021-03').glob('*.parquet'))) == 2


def test_same_rides_same_times(store):
    "Pickup times pass through Spark unchanged (New York wall-clock, no time-zone shift)."
    from taxi_duration import score
    got = pd.read_parquet(store['tmp'] / 'out', filters=[('source', '=', 'green_tripdata_2021-02')])
    want = score.score_data(str(store['files']['2021-02']))[0]
    m = want.merge(got, on='ride_id', suffixes=('', '_spark'))
    assert (m.pickup_datetime == pd.to_datetime(m.pickup_datetime_spark)).all()


def test_cli_engine_spark(store, capsys):
    from taxi_duration.cli import main
    out = store['tmp'] / 'cli-out'
    rc = main(['score', '--engine', 'spark', '--master', 'local[1]', '--data', str(store['files']['2021-02']),
               '--data', str(store['files']['2021-03']), '--output', str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    got = pd.read_parquet(out)
    assert len(got) == len(pd.read_parquet(store['tmp'] / 'out'))
    assert f"scored {got.predicted_duration.notna().sum():,} of {len(got):,} rides of 2 source(s)" in printed.out


def test_bad_source_is_one_clear_error(store, spark):
    from taxi_duration.core import TaxiDurationError
    from taxi_duration.spark import score_spark
    with pytest.raises(TaxiDurationError, match='no such file'):
        score_spark([str(store['tmp'] / 'missing.parquet')], store['tmp'] / 'bad', spark=spark)


def test_bad_file_inside_a_task_is_one_clear_error(store, spark):
    "A file without the ride columns fails inside a Spark task: the driver raises the reader's own message."
    from taxi_duration.core import TaxiDurationError
    from taxi_duration.spark import score_spark
    bad = store['tmp'] / 'no_rides.parquet'
    pd.DataFrame({'x': [1, 2]}).to_parquet(bad)
    with pytest.raises(TaxiDurationError) as e:
        score_spark([str(bad)], store['tmp'] / 'bad-out', spark=spark)
    assert '{e}' not in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not (store['tmp'] / 'bad-out').exists()


def test_pandas_engine_refuses_many_data(store, capsys):
    from taxi_duration.cli import main
    rc = main(['score', '--data', str(store['files']['2021-02']), '--data', str(store['files']['2021-03']),
               '--output', str(store['tmp'] / 'p.parquet')])
    assert rc == 2
    assert 'several go with --engine spark' in capsys.readouterr().err
