"""Data loading end to end: specs, the cache, downloads from a local HTTP server, bad files."""
import http.server
import threading

import pandas as pd
import pytest

from taxi_duration import data
from taxi_duration.core import TaxiDurationError
from taxi_duration.data import DownloadUnavailable, load, read_trips, resolve

SAMPLE = data.ASSETS / 'green_tripdata_2021-01.sample.parquet'


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
    "A local stand-in for the TLC bucket; the cache is a temp folder."
    _Handler.files, _Handler.lie_length, _Handler.hits = {}, set(), []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv('TAXI_TLC_BASE_URL', f'http://127.0.0.1:{srv.server_port}/trip-data')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path / 'cache'))
    yield _Handler
    srv.shutdown()


def test_spec_downloads_once_into_the_cache(tlc_server, tmp_path):
    tlc_server.files['/trip-data/green_tripdata_2021-01.parquet'] = SAMPLE.read_bytes()
    path = resolve('green:2021-01', progress=False)
    assert path == tmp_path / 'cache' / 'green_tripdata_2021-01.parquet'
    assert path.read_bytes() == SAMPLE.read_bytes()
    resolve('green:2021-01', progress=False)  # cached: no second request
    assert tlc_server.hits == ['/trip-data/green_tripdata_2021-01.parquet']
    df, prov = load('green:2021-01', progress=False)
    assert prov['rows_raw'] == 4000 and prov['sha256'] == data.sha256(SAMPLE)


def test_interrupted_download_leaves_no_file(tlc_server, tmp_path):
    tlc_server.files['/trip-data/green_tripdata_2021-02.parquet'] = SAMPLE.read_bytes()
    tlc_server.lie_length.add('/trip-data/green_tripdata_2021-02.parquet')
    with pytest.raises(TaxiDurationError):
        resolve('green:2021-02', progress=False)
    cache = tmp_path / 'cache'
    assert not cache.exists() or list(cache.iterdir()) == []


def test_non_parquet_download_is_rejected_and_not_cached(tlc_server, tmp_path):
    tlc_server.files['/trip-data/green_tripdata_2021-03.parquet'] = b'<html>maintenance</html>'
    with pytest.raises(TaxiDurationError, match='did not return a parquet file'):
        resolve('green:2021-03', progress=False)
    assert not (tmp_path / 'cache' / 'green_tripdata_2021-03.parquet').exists()


def test_month_the_server_does_not_have(tlc_server):
    with pytest.raises(TaxiDurationError, match='TLC does not publish green_tripdata_2020-05.parquet') as e:
        resolve('green:2020-05', progress=False)
    assert not isinstance(e.value, DownloadUnavailable)


def test_no_network_is_its_own_error(monkeypatch, tmp_path):
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    monkeypatch.setenv('TAXI_TLC_BASE_URL', 'http://127.0.0.1:9/nothing-listens-here')
    with pytest.raises(DownloadUnavailable):
        resolve('green:2021-01', progress=False)


def test_yellow_columns_are_normalised(tmp_path):
    # real green rows, written with the yellow schema's column names
    raw = pd.read_parquet(SAMPLE).rename(columns=lambda c: c.replace('lpep_', 'tpep_'))
    raw.to_parquet(tmp_path / 'yellow.parquet')
    df = read_trips(tmp_path / 'yellow.parquet')
    assert list(df.columns) == data.COLUMNS and len(df) == 4000
    assert df.pickup_datetime.equals(read_trips(SAMPLE).pickup_datetime)


def test_csv_input_gives_the_same_rides(tmp_path):
    pd.read_parquet(SAMPLE).to_csv(tmp_path / 'jan.csv', index=False)
    a, pa = load(tmp_path / 'jan.csv')
    b, pb = load(SAMPLE)
    assert pa['rows_kept'] == pb['rows_kept'] and (a.duration.round(9).values == b.duration.round(9).values).all()


@pytest.mark.parametrize('content, match', [
    (b'not a parquet file at all', 'cannot read'),
    (None, 'missing column'),
])
def test_bad_files_say_what_is_wrong(tmp_path, content, match):
    path = tmp_path / 'bad.parquet'
    if content is None: pd.DataFrame({'a': [1]}).to_parquet(path)
    else: path.write_bytes(content)
    with pytest.raises(TaxiDurationError, match=match):
        load(path)


def test_truncated_parquet(tmp_path):
    path = tmp_path / 'cut.parquet'
    path.write_bytes(SAMPLE.read_bytes()[:50_000])
    with pytest.raises(TaxiDurationError, match='cannot read'):
        load(path)


def test_empty_after_filtering(tmp_path):
    raw = pd.read_parquet(SAMPLE)
    raw['lpep_dropoff_datetime'] = raw['lpep_pickup_datetime']  # every ride 0 minutes long
    raw.to_parquet(tmp_path / 'zero.parquet')
    with pytest.raises(TaxiDurationError, match='0 rides left after keeping 1-60 minute trips'):
        load(tmp_path / 'zero.parquet')


def test_full_month_counts_match_the_published_figures(full_data_dir):
    for month, raw_rows, kept in [('01', 76_518, 73_908), ('02', 64_572, 61_921), ('03', 83_827, 80_372)]:
        _, prov = load(full_data_dir / f'green_tripdata_2021-{month}.parquet')
        assert (prov['rows_raw'], prov['rows_kept']) == (raw_rows, kept)
