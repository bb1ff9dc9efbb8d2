"""The ride contract: the service and `score` refuse exactly the same rides for the same reasons, a table and a
list of dicts are the same rides to `train.predict`, and no answer is below the training window's one minute."""
import datetime as dt
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from taxi_duration import rides as contract
from taxi_duration.data import MIN_MINUTES
from taxi_duration.score import read_rides, score_frame

BIN = Path(sys.executable).parent
# values a table can hold as well as JSON: good ones, and just outside the bounds, gaps and non-numbers
times = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)).map(lambda t: t.replace(microsecond=0))
GOOD = {'PULocationID': st.integers(1, 265), 'DOLocationID': st.integers(1, 265),
        'trip_distance': st.one_of(st.none(), st.floats(0, 100)), 'pickup_datetime': st.one_of(st.none(), times)}
bad_zones = st.one_of(st.integers(-5, 0), st.integers(266, 300), st.none(), st.sampled_from([43.5, 0.5, float('inf')]))
BAD = {'PULocationID': bad_zones, 'DOLocationID': bad_zones,
       'trip_distance': st.one_of(st.floats(-1_000, -1e-9), st.floats(100.01, 300_000),
                                  st.sampled_from([100.01, -1e-9, 60_382.0, float('inf'), float('-inf')])),
       'pickup_datetime': st.one_of(st.datetimes(dt.datetime(1995, 1, 1), dt.datetime(1999, 12, 31, 23, 59)),
                                    st.datetimes(dt.datetime(2100, 1, 1), dt.datetime(2105, 1, 1))).map(lambda t: t.replace(microsecond=0))}


@st.composite
def table_rides(draw):
    "A good ride, or one with one or two fields at fault (which fault is reported first is part of the contract)."
    ride = draw(st.fixed_dictionaries(GOOD))
    for field in draw(st.lists(st.sampled_from(list(BAD)), max_size=2, unique=True)): ride[field] = draw(BAD[field])
    return ride


def as_table(rides: list) -> pd.DataFrame:
    "The rides as a file holds them: zone columns of numbers (floats where there is a gap), a column of times."
    df = pd.DataFrame(rides, columns=contract.RIDE_COLUMNS)
    for c in ('PULocationID', 'DOLocationID', 'trip_distance'): df[c] = pd.to_numeric(df[c]).astype(float)
    df['pickup_datetime'] = pd.to_datetime(df['pickup_datetime'])
    return df


def as_json(ride: dict) -> dict:
    "The ride as a client sends it: times as ISO 8601 strings."
    t = ride['pickup_datetime']
    return dict(ride, pickup_datetime=None if t is None else t.isoformat())


def service_says(client, ride: dict) -> tuple:
    "(reason, field) of the service's answer to one ride: ('', '') when it answers it."
    r = client.post('/predict', json=as_json(ride))
    if r.status_code == 200: return '', ''
    assert r.status_code == 400, r.json
    return r.json['error'], r.json.get('field', '')


@pytest.fixture(scope='module')
def client(champion_app):
    return champion_app.test_client()


@pytest.fixture(scope='module')
def served(champion_app):
    return champion_app.extensions['taxi_duration'].current


def test_the_service_and_score_refuse_the_same_rides_for_the_same_reasons(client, served, tmp_path_factory):
    "Generated tables of good and bad rides, written to a file and scored: row by row, score's reason and field are the service's error and field."
    folder, seen = tmp_path_factory.mktemp('tables'), {'refused': 0, 'answered': 0}

    @settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(rides=st.lists(table_rides(), min_size=1, max_size=40))
    def some(rides):
        path = folder / 'rides.parquet'
        as_table(rides).to_parquet(path)
        out, _ = score_frame(served, read_rides(path), 'x')
        said = [service_says(client, r) for r in rides]
        assert list(zip(out.reason, out.field)) == said
        answered = [reason == '' for reason, _ in said]
        assert out.predicted_duration.notna().tolist() == answered
        seen['refused'] += answered.count(False)
        seen['answered'] += answered.count(True)
    some()
    assert seen['refused'] > 100
    assert seen['answered'] > 100


def test_a_table_without_a_zone_column_is_refused_like_a_ride_without_the_field(client):
    "(`score` reads no such file: the contract's table check says it as the service does.)"
    ride = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.0, 'pickup_datetime': dt.datetime(2021, 3, 5, 8, 30)}
    why = contract.check_table(as_table([ride]).drop(columns='DOLocationID'))
    without = {k: v for k, v in ride.items() if k != 'DOLocationID'}
    reason, field = service_says(client, without)
    assert why.reason[0] == reason
    assert why.field[0] == field


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(rides=st.lists(table_rides(), min_size=1, max_size=20))
def test_a_table_and_a_list_of_dicts_are_the_same_rides(rides):
    table = contract.ride_inputs(as_table(rides), now=dt.datetime(2021, 3, 5, 8, 30))
    dicts = contract.ride_inputs(as_table(rides).to_dict('records'), now=dt.datetime(2021, 3, 5, 8, 30))
    assert table.answerable.tolist() == dicts.answerable.tolist()
    assert table.distance_given.tolist() == dicts.distance_given.tolist()
    clean = pd.DataFrame([x for x in dicts.rides if x is not None], columns=contract.RIDE_COLUMNS).astype({'trip_distance': float})
    pd.testing.assert_frame_equal(table.rides[table.answerable].reset_index(drop=True), clean, check_dtype=False)


def shortest_hop(model) -> dict:
    "The same-zone ride of 0.09 miles whose trees answer the least, over every zone."
    from taxi_duration.train import model_features
    hops = [{'PULocationID': z, 'DOLocationID': z, 'trip_distance': 0.09, 'pickup_datetime': '2021-03-05T08:30:00'}
            for z in range(1, 266)]
    trees = model.steps[-1][1].estimator_.predict(model_features(model, contract.ride_inputs(hops).rides))
    return dict(hops[int(np.argmin(trees))], trees=float(trees.min()))


def test_no_answer_below_one_minute_from_the_service(client, small_model):
    "A same-zone hop of 0.09 miles, which the trees alone answer with less than a minute (down to a negative duration)."
    hop = shortest_hop(small_model)
    assert hop.pop('trees') < MIN_MINUTES  # the floor is what this test is about
    answer = client.post('/predict', json=hop).json
    assert answer['duration'] == MIN_MINUTES
    assert answer['interval'][0] == MIN_MINUTES
    assert answer['interval'][1] >= answer['duration']


def test_no_answer_below_one_minute_from_taxi_duration_score(small_model, small_registry, tmp_path):
    "The same hop, and the same with its distance not given, through `taxi-duration score`: floored, each point inside its range."
    hop = shortest_hop(small_model)
    hop.pop('trees')
    src = tmp_path / 'hops.csv'
    pd.DataFrame([hop, dict(hop, trip_distance=None)]).to_csv(src, index=False)
    env = dict(os.environ, MLFLOW_TRACKING_URI=small_registry['tracking_uri'])
    env.pop('MODEL_URI', None)
    done = subprocess.run([str(BIN / 'taxi-duration'), 'score', '--data', str(src), '--output', str(tmp_path / 'p.csv')],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = pd.read_csv(tmp_path / 'p.csv')
    assert out.predicted_duration.min() >= MIN_MINUTES
    assert out.predicted_p10.min() >= MIN_MINUTES
    assert (out.predicted_p10 <= out.predicted_duration).all()
    assert (out.predicted_duration <= out.predicted_p90).all()
    assert math.isclose(out.predicted_duration[0], MIN_MINUTES)
