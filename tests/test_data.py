"""Data loading end to end: specs, the cache, downloads from a local HTTP server, samples, bad files.

Download and file-handling tests use a small hand-made month in the TLC's green schema (not TLC
data), so they run on a fresh clone; tests about the real months ask for them through the `real_months`
fixture and skip, saying why, without them.
"""
import http.server
import io
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest

from taxi_duration import data
from taxi_duration.core import TaxiDurationError
from taxi_duration.data import DownloadUnavailable, load, read_trips, resolve


def fake_month(n: int = 500, seed: int = 1) -> pd.DataFrame:
    "Hand-made rides in the green schema: January 2021, durations 0-90 minutes, some without a zone."
    rng = np.random.default_rng(seed)
    pickup = pd.Timestamp('2021-01-01') + pd.to_timedelta(rng.integers(0, 31 * 24 * 3600, n), unit='s')
    return pd.DataFrame({
        'VendorID': rng.integers(1, 3, n),
        'lpep_pickup_datetime': pickup,
        'lpep_dropoff_datetime': pickup + pd.to_timedelta(rng.uniform(0, 90, n), unit='min'),
        'PULocationID': np.where(rng.random(n) < 0.02, np.nan, rng.integers(1, 266, n)),
        'DOLocationID': rng.integers(1, 266, n),
        'trip_distance': rng.uniform(0, 20, n).round(2),
    })


@pytest.fixture
def month_file(tmp_path):
    path = tmp_path / 'green_tripdata_2021-01.parquet'
    fake_month().to_parquet(path, index=False)
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}      # url path -> bytes
    lie_length: set = set()  # paths whose Content-Length claims more than is sent
    hits: list = []

    def do_GET(self):
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_response(403); self.end_headers(); return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body) * 2 if self.path in self.lie_length else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a): pass


@pytest.fixture
def tlc_server(monkeypatch, tmp_path):
    "A local stand-in for the TLC host (trip-data/ and misc/); the cache is a temp folder."
    _Handler.files, _Handler.lie_length, _Handler.hits = {}, set(), []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.root = f'http://127.0.0.1:{srv.server_port}'
    monkeypatch.setenv('TAXI_TLC_BASE_URL', _Handler.root)
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('TAXI_SAMPLE_DIR', str(tmp_path / 'samples'))
    yield _Handler
    srv.shutdown()
    srv.server_close()


def test_spec_downloads_once_into_the_cache(tlc_server, tmp_path, month_file):
    "A month spec not in the cache is downloaded once, then read from the cache."
    tlc_server.files['/trip-data/green_tripdata_2021-01.parquet'] = month_file.read_bytes()
    path = resolve('green:2021-01', progress=False)
    assert path == tmp_path / 'cache' / 'green_tripdata_2021-01.parquet'
    assert path.read_bytes() == month_file.read_bytes()
    resolve('green:2021-01', progress=False)  # cached: no second request
    assert tlc_server.hits == ['/trip-data/green_tripdata_2021-01.parquet']
    df, prov = load('green:2021-01', progress=False)
    assert prov['rows_raw'] == 500
    assert prov['sha256'] == data.sha256(month_file)


@pytest.mark.parametrize('suffix', ['', '/', '/trip-data', '/trip-data/'])
def test_base_url_names_the_host_root_and_the_old_trip_data_spelling_still_works(tlc_server, month_file, suffix,
                                                                                  monkeypatch):
    "TAXI_TLC_BASE_URL names the host root; a trailing slash or /trip-data still reaches both of its folders."
    monkeypatch.setenv('TAXI_TLC_BASE_URL', tlc_server.root + suffix)
    tlc_server.files['/trip-data/green_tripdata_2021-01.parquet'] = month_file.read_bytes()
    tlc_server.files['/misc/taxi_zone_lookup.csv'] = b'LocationID,Borough,Zone,service_zone\n1,EWR,Newark Airport,EWR\n'
    assert resolve('green:2021-01', progress=False).exists()
    assert data.fetch_misc('taxi_zone_lookup.csv', progress=False).read_text().startswith('LocationID,')
    assert tlc_server.hits == ['/trip-data/green_tripdata_2021-01.parquet', '/misc/taxi_zone_lookup.csv']


def test_fetch_misc_caches_a_zip_and_refuses_what_is_not_one(tlc_server, tmp_path):
    "A misc .zip is downloaded once and cached; an HTML page served in its place is refused and not cached."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z: z.writestr('taxi_zones.shp', b'shape bytes')
    tlc_server.files['/misc/taxi_zones.zip'] = buf.getvalue()
    path = data.fetch_misc('taxi_zones.zip', progress=False)
    assert path == tmp_path / 'cache' / 'taxi_zones.zip'
    assert zipfile.is_zipfile(path)
    data.fetch_misc('taxi_zones.zip', progress=False)
    assert tlc_server.hits == ['/misc/taxi_zones.zip']
    tlc_server.files['/misc/other.zip'] = b'<html>maintenance</html>'
    with pytest.raises(TaxiDurationError, match='did not return a usable .zip file'):
        data.fetch_misc('other.zip', progress=False)
    assert sorted(p.name for p in (tmp_path / 'cache').iterdir()) == ['taxi_zones.zip']


@pytest.mark.parametrize('name', ['../x.csv', 'a/b.csv', 'x.parquet', '.hidden.csv', ''])
def test_fetch_misc_takes_only_plain_file_names(name):
    "A misc file name with a path, another suffix, a leading dot or nothing is refused before any download."
    with pytest.raises(TaxiDurationError, match='not a TLC misc file name'):
        data.fetch_misc(name)


def test_interrupted_download_leaves_no_file(tlc_server, tmp_path, month_file):
    "A download shorter than its Content-Length is an error and leaves nothing in the cache."
    tlc_server.files['/trip-data/green_tripdata_2021-02.parquet'] = month_file.read_bytes()
    tlc_server.lie_length.add('/trip-data/green_tripdata_2021-02.parquet')
    with pytest.raises(TaxiDurationError):
        resolve('green:2021-02', progress=False)
    cache = tmp_path / 'cache'
    assert not cache.exists() or list(cache.iterdir()) == []


def test_non_parquet_download_is_rejected_and_not_cached(tlc_server, tmp_path):
    "A maintenance page served as a month is refused and not cached."
    tlc_server.files['/trip-data/green_tripdata_2021-03.parquet'] = b'<html>maintenance</html>'
    with pytest.raises(TaxiDurationError, match='did not return a usable .parquet file'):
        resolve('green:2021-03', progress=False)
    assert not (tmp_path / 'cache' / 'green_tripdata_2021-03.parquet').exists()


def test_month_the_server_does_not_have(tlc_server):
    "A month the host answers 403 for is 'not published', not 'no network'."
    with pytest.raises(TaxiDurationError, match='TLC does not publish green_tripdata_2020-05.parquet') as e:
        resolve('green:2020-05', progress=False)
    assert not isinstance(e.value, DownloadUnavailable)


def test_no_network_says_which_file_goes_where(monkeypatch, tmp_path):
    "Without network: one line naming the file, the folder to put it in, and where the TLC publishes it."
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/nothing-listens-here')
    with pytest.raises(DownloadUnavailable) as e:
        resolve('green:2021-01', progress=False)
    msg = str(e.value)
    assert f'put green_tripdata_2021-01.parquet in {tmp_path}' in msg
    assert 'https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2021-01.parquet' in msg
    assert '\n' not in msg


def test_sample_spec_is_drawn_from_the_cached_month_downloaded_if_needed(tlc_server, tmp_path, month_file):
    "A sample spec downloads the month if needed and draws a seeded sample of it, written atomically."
    tlc_server.files['/trip-data/green_tripdata_2021-01.parquet'] = month_file.read_bytes()
    path = resolve('sample:green:2021-01', progress=False)
    assert path == tmp_path / 'samples' / 'green_tripdata_2021-01.sample.parquet'
    assert (tmp_path / 'cache' / 'green_tripdata_2021-01.parquet').exists()
    got = pd.read_parquet(path)
    want = fake_month().sample(n=500, random_state=data.SAMPLE_SEED).sort_index().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)  # n is capped at the month's size; seed 0; original order
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # written atomically: no temp left
    assert load('sample:green:2021-01', progress=False)[1]['sample'] is True


def test_a_read_only_data_folder_keeps_samples_elsewhere(monkeypatch, tmp_path, month_file):
    "With TAXI_DATA_DIR read-only and no TAXI_SAMPLE_DIR, samples go to the per-user cache."
    ro = month_file.parent
    ro.chmod(0o555)
    try:
        monkeypatch.setenv('TAXI_DATA_DIR', str(ro))
        monkeypatch.delenv('TAXI_SAMPLE_DIR')
        monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path.parent / f'{tmp_path.name}-cache'))
        path = resolve('sample:green:2021-01')
        assert path.parent == tmp_path.parent / f'{tmp_path.name}-cache' / 'taxi-duration' / 'samples'
        assert not (ro / 'samples').exists()
    finally: ro.chmod(0o755)


def test_real_sample_is_4000_seeded_rows_of_the_real_month(real_months):
    "The sample of a real month is 4,000 rows drawn with seed 0, in the month's order."
    path = resolve('sample:green:2021-01')
    full = pd.read_parquet(real_months / 'green_tripdata_2021-01.parquet')
    want = full.sample(n=4000, random_state=0).sort_index().reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(path), want)


def test_ride_minutes_and_the_window():
    "A ride's minutes are drop-off minus pick-up; prepare keeps 1-60 minute rides that have a pick-up zone."
    assert data.MIN_MINUTES == 1
    assert data.MAX_MINUTES == 60
    df = fake_month(50)
    df = df.rename(columns=lambda c: c.replace('lpep_', ''))
    minutes = data.ride_minutes(df)
    assert np.allclose(minutes, (df.dropoff_datetime - df.pickup_datetime).dt.total_seconds() / 60)
    kept = data.prepare(df)
    assert kept.duration.between(data.MIN_MINUTES, data.MAX_MINUTES).all()
    assert len(kept) == (minutes.between(1, 60) & df.PULocationID.notna()).sum()


def test_yellow_columns_are_normalised(tmp_path, month_file):
    "A yellow file (tpep_ columns) reads into the same columns and times as a green one."
    raw = pd.read_parquet(month_file).rename(columns=lambda c: c.replace('lpep_', 'tpep_'))
    raw.to_parquet(tmp_path / 'yellow.parquet')
    df = read_trips(tmp_path / 'yellow.parquet')
    assert list(df.columns) == data.COLUMNS
    assert len(df) == 500
    assert df.pickup_datetime.equals(read_trips(month_file).pickup_datetime)


def test_csv_input_gives_the_same_rides(tmp_path, month_file):
    "The same month as CSV and as parquet gives the same rides."
    pd.read_parquet(month_file).to_csv(tmp_path / 'jan.csv', index=False)
    a, pa = load(tmp_path / 'jan.csv')
    b, pb = load(month_file)
    assert pa['rows_kept'] == pb['rows_kept']
    np.testing.assert_array_equal(a.duration.round(9).values, b.duration.round(9).values)


@pytest.mark.parametrize('content, match', [
    (b'not a parquet file at all', 'cannot read'),
    (None, 'missing column'),
])
def test_bad_files_say_what_is_wrong(tmp_path, content, match):
    "A file that is not parquet, or lacks the ride columns, is one error saying which."
    path = tmp_path / 'bad.parquet'
    if content is None: pd.DataFrame({'a': [1]}).to_parquet(path)
    else: path.write_bytes(content)
    with pytest.raises(TaxiDurationError, match=match):
        load(path)


def test_truncated_parquet(tmp_path, month_file):
    "A parquet file cut short cannot be read: one error, not a traceback from pyarrow."
    path = tmp_path / 'cut.parquet'
    path.write_bytes(month_file.read_bytes()[:5_000])
    with pytest.raises(TaxiDurationError, match='cannot read'):
        load(path)


def test_empty_after_filtering(tmp_path, month_file):
    "A file whose rides are all filtered out is an error saying so."
    raw = pd.read_parquet(month_file)
    raw['lpep_dropoff_datetime'] = raw['lpep_pickup_datetime']  # every ride 0 minutes long
    raw.to_parquet(tmp_path / 'zero.parquet')
    with pytest.raises(TaxiDurationError, match='0 rides left after keeping 1-60 minute trips'):
        load(tmp_path / 'zero.parquet')


@pytest.mark.parametrize('month, raw_rows, kept', [('01', 76_518, 73_846), ('02', 64_572, 61_895),
                                                   ('03', 83_827, 80_349)])
def test_full_month_counts_match_the_published_figures(real_months, month, raw_rows, kept):
    "Rows read and rides kept of each real month are the figures the README and the notebooks give."
    _, prov = load(real_months / f'green_tripdata_2021-{month}.parquet')
    assert prov['rows_raw'] == raw_rows
    assert prov['rows_kept'] == kept
