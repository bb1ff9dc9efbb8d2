"""Zones: where the shapes are found (zip or folder, cache or download hook), bad zips, and the fallbacks offline."""
import json, shutil, warnings, zipfile
from pathlib import Path

import numpy as np
import pytest

from taxi_duration import data, zones
from taxi_duration.core import TaxiDurationError
from taxi_duration.features import GEOMETRY, ZONES_TIME, make_featurizer

SHARED_ZONES = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'taxi_zones'


@pytest.fixture
def shapes_dir():
    if not (SHARED_ZONES / 'taxi_zones.shp').exists(): pytest.skip(f'no TLC zone shapefile in {SHARED_ZONES}')
    return SHARED_ZONES


def _zip(dest: Path, src: Path, prefix='taxi_zones/', exts=('shp', 'shx', 'dbf', 'prj')) -> Path:
    with zipfile.ZipFile(dest, 'w') as z:
        for e in exts: z.write(src / f'taxi_zones.{e}', f'{prefix}taxi_zones.{e}')
    return dest


def test_zip_as_the_tlc_serves_it(shapes_dir, tmp_path, monkeypatch):
    _zip(tmp_path / 'taxi_zones.zip', shapes_dir)
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    assert zones._fetch('taxi_zones.zip') == tmp_path / 'taxi_zones.zip'
    cent = zones.zone_centroids()
    assert len(cent) == 260 and {56, 103} <= set(cent.index)


def test_unzipped_folder_as_in_shared(shapes_dir, tmp_path, monkeypatch):
    shutil.copytree(shapes_dir, tmp_path / 'taxi_zones')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    assert zones._fetch('taxi_zones.zip') == tmp_path / 'taxi_zones'
    assert len(zones.zone_rings()) == 260


def test_zip_without_a_shapefile_is_one_clear_error(tmp_path, monkeypatch):
    with zipfile.ZipFile(tmp_path / 'taxi_zones.zip', 'w') as z: z.writestr('../../etc/passwd.shp', b'x')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    with pytest.raises(TaxiDurationError, match='no .shp/.shx/.dbf'): zones.zone_rings()


def test_not_a_zip_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / 'taxi_zones.zip').write_bytes(b'<html>404</html>')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    with pytest.raises(TaxiDurationError, match='not a readable zip'): zones.zone_rings()


def test_missing_uses_the_data_steps_downloader(shapes_dir, tmp_path, monkeypatch):
    "When data.fetch_misc exists (issue 8, data side), _fetch hands it the name."
    asked = []
    def fetch_misc(name):
        asked.append(name)
        return _zip(tmp_path / name, shapes_dir)
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path / 'empty'))
    monkeypatch.setattr(data, 'fetch_misc', fetch_misc, raising=False)
    assert len(zones.zone_centroids()) == 260 and asked == ['taxi_zones.zip']


def test_offline_fresh_clone_falls_back(tmp_path, monkeypatch):
    "No cache, no downloader: the repository ships no zone table; the featuriser warns, centroids are all 0."
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    monkeypatch.delattr(data, 'fetch_misc', raising=False)
    with pytest.raises(TaxiDurationError, match='taxi_zone_lookup.csv is not in'): zones.zone_table()
    with pytest.raises(TaxiDurationError, match='taxi_zones.zip is not in'): zones.zone_centroids()
    with pytest.warns(UserWarning, match='zone shapes unavailable'): f = make_featurizer()
    ride = {'PULocationID': 43, 'DOLocationID': 151, 'pickup_datetime': '2021-03-05T08:30:00'}
    X = f.fit_transform([ride])
    assert X.shape == (1, len(ZONES_TIME) + len(GEOMETRY)) and (X[0, len(ZONES_TIME):-1] == 0).all()


def test_svg_paths_are_closed_and_small(shapes_dir, monkeypatch):
    monkeypatch.setenv('TAXI_DATA_DIR', str(shapes_dir.parent))
    svg = zones.zone_svg()
    assert all(p.startswith('M') and p.endswith('Z') for p in svg['paths'].values())
    w, h = map(float, svg['viewBox'].split()[2:])
    xy = np.array([[float(v) for v in pt.split(',')] for p in svg['paths'].values()
                   for pt in p.replace('M', 'L').replace('Z', '').split('L') if pt])
    assert xy.min() >= 0 and xy[:, 0].max() <= w and xy[:, 1].max() <= h
    assert len(json.dumps(svg)) < 150_000
