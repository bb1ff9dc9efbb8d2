"""Zones: where the shapes are found (zip or folder, cache or download hook), bad zips, and the fallbacks offline."""
import json, shutil, zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA_DIR
from taxi_duration import data, zones
from taxi_duration.core import TaxiDurationError
from taxi_duration.features import GEOMETRY, ZONES_TIME, make_featurizer


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory) -> Path:
    """A folder `taxi_zones/` holding the TLC zone shapefile, from the data folder (unzipped, or the TLC's zip
    unpacked into a temp folder); skipped, saying why, where neither is there."""
    if (DATA_DIR / 'taxi_zones' / 'taxi_zones.shp').exists(): return DATA_DIR / 'taxi_zones'
    if not (DATA_DIR / 'taxi_zones.zip').exists():
        pytest.skip(f'needs the TLC zone shapes in {DATA_DIR} (taxi_zones/ or taxi_zones.zip; `make run` fetches them)')
    folder = tmp_path_factory.mktemp('zones') / 'taxi_zones'
    folder.mkdir()
    with zipfile.ZipFile(DATA_DIR / 'taxi_zones.zip') as z:
        for member in z.namelist():
            if Path(member).name.startswith('taxi_zones.'): (folder / Path(member).name).write_bytes(z.read(member))
    return folder


def _zip(dest: Path, src: Path, prefix='taxi_zones/', exts=('shp', 'shx', 'dbf', 'prj')) -> Path:
    with zipfile.ZipFile(dest, 'w') as z:
        for e in exts: z.write(src / f'taxi_zones.{e}', f'{prefix}taxi_zones.{e}')
    return dest


def test_zip_as_the_tlc_serves_it(shapes_dir, tmp_path, monkeypatch):
    "The zip as the TLC serves it (files under taxi_zones/): 260 zone centroids, the split zones 56 and 103 among them."
    _zip(tmp_path / 'taxi_zones.zip', shapes_dir)
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    assert zones._fetch('taxi_zones.zip') == tmp_path / 'taxi_zones.zip'
    cent = zones.zone_centroids()
    assert len(cent) == 260
    assert {56, 103} <= set(cent.index)


def test_unzipped_folder_as_in_shared(shapes_dir, tmp_path, monkeypatch):
    "An unzipped taxi_zones/ folder in the data folder is used as the zip would be."
    shutil.copytree(shapes_dir, tmp_path / 'taxi_zones')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    assert zones._fetch('taxi_zones.zip') == tmp_path / 'taxi_zones'
    assert len(zones.zone_rings()) == 260


def test_zip_without_a_shapefile_is_one_clear_error(tmp_path, monkeypatch):
    "A zip without the shapefile (here: a path-traversal name) is one error naming what is missing; nothing extracted."
    with zipfile.ZipFile(tmp_path / 'taxi_zones.zip', 'w') as z: z.writestr('../../etc/passwd.shp', b'x')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    with pytest.raises(TaxiDurationError, match='no .shp/.shx/.dbf'): zones.zone_rings()


def test_not_a_zip_is_one_clear_error(tmp_path, monkeypatch):
    "An HTML page saved as taxi_zones.zip is one error saying it is not a readable zip."
    (tmp_path / 'taxi_zones.zip').write_bytes(b'<html>404</html>')
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    with pytest.raises(TaxiDurationError, match='not a readable zip'): zones.zone_rings()


def test_missing_uses_the_data_steps_downloader(shapes_dir, tmp_path, monkeypatch):
    "Shapes missing from the data folder are fetched through the data step's downloader, data.fetch_misc."
    asked = []
    def fetch_misc(name):
        asked.append(name)
        return _zip(tmp_path / name, shapes_dir)
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path / 'empty'))
    monkeypatch.setattr(data, 'fetch_misc', fetch_misc, raising=False)
    assert len(zones.zone_centroids()) == 260
    assert asked == ['taxi_zones.zip']


def test_offline_fresh_clone_falls_back(tmp_path, monkeypatch):
    "No cache, no downloader: the repository ships no zone table; the featuriser warns, centroids are all 0."
    monkeypatch.setenv('TAXI_DATA_DIR', str(tmp_path))
    monkeypatch.delattr(data, 'fetch_misc', raising=False)
    with pytest.raises(TaxiDurationError, match='taxi_zone_lookup.csv is not in'): zones.zone_table()
    with pytest.raises(TaxiDurationError, match='taxi_zones.zip is not in'): zones.zone_centroids()
    with pytest.warns(UserWarning, match='zone shapes unavailable'): f = make_featurizer()
    ride = {'PULocationID': 43, 'DOLocationID': 151, 'pickup_datetime': '2021-03-05T08:30:00'}
    X = f.fit_transform([ride])
    assert X.shape == (1, len(ZONES_TIME) + len(GEOMETRY))
    assert (X[0, len(ZONES_TIME):-1] == 0).all()


def test_svg_paths_are_closed_and_small(shapes_dir, monkeypatch):
    "The map's SVG: every zone a closed path inside the viewBox, the whole under 150 kB of JSON."
    monkeypatch.setenv('TAXI_DATA_DIR', str(shapes_dir.parent))
    svg = zones.zone_svg()
    assert all(p.startswith('M') for p in svg['paths'].values())
    assert all(p.endswith('Z') for p in svg['paths'].values())
    w, h = map(float, svg['viewBox'].split()[2:])
    xy = np.array([[float(v) for v in pt.split(',')] for p in svg['paths'].values()
                   for pt in p.replace('M', 'L').replace('Z', '').split('L') if pt])
    assert xy.min() >= 0
    assert xy[:, 0].max() <= w
    assert xy[:, 1].max() <= h
    assert len(json.dumps(svg)) < 150_000
