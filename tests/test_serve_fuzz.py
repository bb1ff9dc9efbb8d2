"""Fuzz POST /predict with hypothesis: thousands of generated requests (FUZZ_PAYLOADS of anything,
VALID_PAYLOADS of valid rides, derandomized: the same ones every run), none may get a 5xx, every
error is JSON naming a problem, every valid ride is answered, and the service keeps answering
afterwards. Flask's test client (no socket) keeps this to seconds."""
import datetime as dt
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from taxi_duration import serve
from taxi_duration.data import MIN_MINUTES

RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}
FIELDS = ['PULocationID', 'DOLocationID', 'trip_distance', 'pickup_datetime', 'ride_id']
SENT = {'any': 0, 'valid': 0}
PER_EXAMPLE = 5  # requests per hypothesis example: generating them together is ~2x cheaper
FUZZ_PAYLOADS, VALID_PAYLOADS = 2_500, 600


@pytest.fixture(scope='module')
def client(champion_app):
    return champion_app.test_client()


# values a client might send for each field: valid ones, near misses, and nonsense
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
zones = st.one_of(st.integers(1, 265), st.integers(-3, 270), st.sampled_from([43.0, '43', True, None, [43], {'id': 43}, 10**30]), json_values)
distances = st.one_of(st.floats(0, 100), st.integers(0, 100), st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                      st.sampled_from([-0.0, 100, 100.0000001, 5e-324, 1e308, '1.0', False]), json_values)
iso = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
times = st.one_of(iso.map(dt.datetime.isoformat), st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 30),
                                                                 timezones=st.timezones()).map(dt.datetime.isoformat),
                  st.dates().map(dt.date.isoformat), st.text(max_size=30), st.from_regex(r'\A\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?([+-]\d\d:\d\d|Z)?\Z'),
                  st.sampled_from(['0001-01-01T00:00:00+05:00', '9999-12-31T23:59:59-12:00', '2021-02-29', '2021-03-05 08:30']), json_values)
ride_ids = st.one_of(st.text(min_size=1, max_size=128), st.integers(-2**63, 2**63 - 1), st.text(min_size=129, max_size=140), json_values)
VALUES = {'PULocationID': zones, 'DOLocationID': zones, 'trip_distance': distances, 'pickup_datetime': times, 'ride_id': ride_ids}


@st.composite
def rides(draw):
    "A ride with some fields dropped, replaced, or added."
    ride = dict(RIDE)
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()): ride.pop(f, None)
        else: ride[f] = draw(VALUES[f])
    if draw(st.integers(0, 9)) == 0: ride[draw(st.text(max_size=8))] = draw(json_values)
    return ride


payloads = st.one_of(rides(), st.lists(rides(), min_size=0, max_size=5), json_values)  # (the 1,000-ride limit: test_serve.py)


def encode(payload) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()


bodies = st.one_of(
    payloads.map(encode),
    st.tuples(payloads.map(encode), st.integers(0, 200)).map(lambda t: t[0][:t[1]]),          # cut short
    st.tuples(payloads.map(encode), st.binary(min_size=1, max_size=4), st.integers(0, 200))    # a few bytes spliced in
      .map(lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),
    st.binary(max_size=300),
    st.tuples(st.sampled_from([b'[', b'{"a":', b'[{"PULocationID":']), st.integers(1, 300_000)).map(lambda t: t[0] * t[1]),
    st.integers(serve.MAX_BODY_BYTES - 5, serve.MAX_BODY_BYTES + 5).map(lambda n: b'[' + b' ' * (n - 2) + b']'),
)
content_types = st.sampled_from(['application/json'] * 6 + ['application/json; charset=utf-8', 'application/ld+json', 'text/plain',
                                 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', None, 'application/jsonx'])
methods = st.sampled_from(['POST'] * 8 + ['GET', 'PUT', 'PATCH', 'DELETE'])


def check_answer(payload, answer):
    "A 200 answer to a ride has the model's minutes and version, and echoes the ride's ID."
    assert isinstance(answer['duration'], float)
    assert math.isfinite(answer['duration'])
    assert answer['model_version']
    assert dt.datetime.fromisoformat(answer['pickup_datetime'])
    lo, hi = answer['interval']
    assert lo >= MIN_MINUTES  # no answer below the training window's minute
    assert lo <= answer['duration'] <= hi
    assert answer['used_distance'] is (payload.get('trip_distance') is not None)
    if 'ride_id' in payload: assert answer['ride_id'] == payload['ride_id']


def check_request(client, body, content_type, method):
    "Send one request; no 5xx, errors are JSON, a 200 answers every ride."
    r = client.open('/predict', method=method, data=body, content_type=content_type)
    assert r.status_code < 500, (r.status_code, r.data[:300])
    assert r.mimetype == 'application/json'
    if r.status_code >= 400:
        assert set(r.json) <= {'error', 'field'}
        assert isinstance(r.json['error'], str)
        assert 0 < len(r.json['error']) < 500
        return
    assert method == 'POST'
    assert r.status_code == 200
    payload = json.loads(body)
    if isinstance(payload, list):
        assert len(r.json) == len(payload)
        for p, a in zip(payload, r.json): check_answer(p, a)
    else: check_answer(payload, r.json)


def test_fuzz_predict(client):
    @settings(max_examples=FUZZ_PAYLOADS // PER_EXAMPLE, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests=st.lists(st.tuples(bodies, content_types, methods), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def some(requests):
        for body, content_type, method in requests:
            SENT['any'] += 1
            check_request(client, body, content_type, method)
    some()
    assert SENT['any'] >= FUZZ_PAYLOADS


valid_rides = st.fixed_dictionaries(
    {'PULocationID': st.integers(1, 265), 'DOLocationID': st.integers(1, 265)},
    optional={'trip_distance': st.one_of(st.none(), st.floats(0, 100), st.integers(0, 100)),
              'pickup_datetime': st.one_of(st.none(), st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 30))
                                           .map(dt.datetime.isoformat)),
              'ride_id': st.one_of(st.text(min_size=1, max_size=128), st.integers(-2**63, 2**63 - 1))})


def test_every_valid_ride_is_answered(client):
    @settings(max_examples=VALID_PAYLOADS // PER_EXAMPLE, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(payloads=st.lists(st.one_of(valid_rides, st.lists(valid_rides, min_size=1, max_size=5)), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def some(payloads):
        for payload in payloads:
            SENT['valid'] += 1
            r = client.post('/predict', json=payload)
            assert r.status_code == 200, r.json
            if isinstance(payload, list):
                assert len(r.json) == len(payload)
                for p, a in zip(payload, r.json): check_answer(p, a)
            else: check_answer(payload, r.json)
    some()
    assert SENT['valid'] >= VALID_PAYLOADS


def test_still_answering_after_the_fuzz(client):
    assert SENT['any'] + SENT['valid'] >= FUZZ_PAYLOADS + VALID_PAYLOADS or pytest.skip('run with the fuzz tests')
    assert client.get('/health').status_code == 200
    assert client.post('/predict', json=RIDE).status_code == 200
