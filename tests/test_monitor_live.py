"""The live path: the service's hook records real rides into whylogs profiles off the request path;
files per window and per process, nothing lost on SIGTERM (plain process and gunicorn workers),
bounded memory; `monitor --profiles` stays quiet on real traffic and fires on breakage."""
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxi_duration import alerts, live, monitor, profiles, verdicts
from taxi_duration.data import load
from taxi_duration.rides import RIDE_COLUMNS

from monitor_fixtures import run_cli, sample_file
from scenarios import make_scenario
from servers import free_port, start, stop, wait_until

pytest_plugins = ['monitor_fixtures']  # env, reference, model, raw_march, march_sample: one champion per session

ROOT = Path(__file__).resolve().parent.parent




def drive(profiler, frame: pd.DataFrame, model, version, per_request: int=1, scale: float=1.0):
    "Record the rides of `frame` as the service would: ride dicts, predictions, the model version."
    rides = frame[RIDE_COLUMNS].to_dict('records')
    pred = profiles.score_rides(model, frame) * scale
    for i in range(0, len(rides), per_request):
        profiler.record(rides[i:i + per_request], pred[i:i + per_request], version)


def live_frame(raw):
    "Completed rides in the service's shape (what a client sends), keeping rides with gaps."
    return verdicts.completed_rides(raw)


LIVE_EXPECTED = {
    'km': {('drift', 'trip_distance'), ('prediction', 'prediction')},
    'zones_constant': {('drift', 'PULocationID'), ('drift', 'DOLocationID')},
    'zones_scrambled': {('drift', 'PULocationID'), ('drift', 'DOLocationID')},
    # live, a missing distance is judged against the service's earlier traffic (riders may leave it out): one
    # window has none, see test_a_feed_that_loses_its_distances_is_an_input_alert
    'missing': {('missing', 'PULocationID')},
    'utc_clock': {('drift', 'pickup_hour')},
    'long_rides': {('drift', 'trip_distance'), ('prediction', 'prediction')},
}


def test_real_traffic_through_the_profiler_stays_quiet(env, reference, model, march_sample, tmp_path):
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    fr = live_frame(march_sample)
    drive(prof, fr, model, reference.version)
    prof.close()
    assert prof.recorded == len(fr)
    assert prof.dropped == 0
    assert prof.errors == 0
    assert run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html')) == 0
    summary = json.loads((tmp_path / 'r.json').read_text())
    assert summary['rows'] == len(fr)
    assert summary['healthy']


@pytest.mark.parametrize('scenario', list(LIVE_EXPECTED) + ['predictions_x1.3'])
def test_live_breakage_fires(env, reference, model, march_sample, tmp_path, scenario):
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    if scenario == 'predictions_x1.3':  # a mis-scaled model in production: inputs fine, answers off
        drive(prof, live_frame(march_sample), model, reference.version, per_request=20, scale=1.3)
        expected = {('prediction', 'prediction')}
    else:
        drive(prof, live_frame(make_scenario(march_sample, scenario)), model, reference.version, per_request=20)
        expected = LIVE_EXPECTED[scenario]
    prof.close()
    res = monitor.monitor_profiles(tmp_path / 'p', reference)
    assert expected <= {(f.kind, f.column) for f in res.alerts}, res.alerts
    assert run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html')) == 3


def test_windows_files_and_report_over_time(env, reference, model, raw_march, tmp_path, monkeypatch):
    "Several windows -> several files, each a readable profile; the report shows them over time."
    clock = [1_700_000_000.0]
    monkeypatch.setattr(live.time, 'time', lambda: clock[0])
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=60, flush_seconds=0.05, handle_sigterm=False)
    fr = live_frame(raw_march).iloc[:6000]
    for k, part in enumerate((fr.iloc[:2000], fr.iloc[2000:4000], fr.iloc[4000:]), 1):
        drive(prof, part, model, reference.version, per_request=10)
        clock[0] += 60
        wait_until(lambda: prof.files_written >= k, f'the profiler thread to write window {k}, which ended')
    prof.close()
    files = sorted((tmp_path / 'p').glob('profile-*.bin'))
    # one window a part; a window's last rides may come in a second file when a flush was under way as it ended
    assert len({f.name.split('-')[2] for f in files}) == 3
    assert all(f'-{os.getpid()}-' in f.name for f in files)
    assert list((tmp_path / 'p').glob('.*')) == []  # no temporary files left behind
    res = monitor.monitor_profiles(tmp_path / 'p', reference)
    assert len(res.windows) == 3
    assert sum(w['rows'] for w in res.windows) == len(fr)
    assert res.rows == len(fr)
    alerts.write_outputs(res, tmp_path / 'r.html')
    assert 'Over time' in (tmp_path / 'r.html').read_text()


def test_memory_is_bounded(tmp_path):
    ride = {'PULocationID': 74, 'DOLocationID': 75, 'trip_distance': 1.5, 'pickup_datetime': pd.Timestamp('2021-03-05 08:30')}
    prof = live.LiveProfiler(tmp_path, max_rows=1000, flush_seconds=3600, batch_rows=10**9, handle_sigterm=False)
    for _ in range(5000): prof.record([ride], np.array([9.0]), '1')
    assert prof.recorded == 1000
    assert prof.dropped == 4000
    assert prof._buffered == 1000
    prof.close()
    # a profile's size does not grow with the rides in it
    sizes = []
    for n in (2_000, 50_000):
        fr = pd.DataFrame({'PULocationID': np.random.default_rng(0).integers(1, 266, n), 'DOLocationID': 75,
                           'trip_distance': np.random.default_rng(1).exponential(3, n), 'pickup_datetime': pd.Timestamp('2021-03-05 08:30')})
        sizes.append(len(profiles.profile(profiles.monitor_frame(fr, np.ones(n))).serialize()))
    assert sizes[1] < sizes[0] * 3, sizes


def test_record_never_raises(tmp_path):
    prof = live.LiveProfiler(tmp_path, handle_sigterm=False)
    prof.record(None, None, '1')                 # nonsense in: counted, not raised
    prof.record([{'weird': object()}], [1.0], '1')  # bad ride: the thread's profiling must survive it
    prof.close()
    assert prof.errors >= 1


_SCRIPT = '''
import sys, time, numpy as np, pandas as pd
from taxi_duration.live import LiveProfiler
prof = LiveProfiler(sys.argv[1], window_seconds=3600, flush_seconds=3600)
ride = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.5, "pickup_datetime": pd.Timestamp("2021-03-05 08:30")}
for _ in range(777): prof.record([ride], np.array([9.0]), "5")
print("ready", flush=True)
time.sleep(60)
'''


def test_sigterm_writes_everything(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', _SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, WHYLOGS_NO_ANALYTICS='1'))
    try:
        assert p.stdout.readline().strip() == 'ready'
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None: p.kill()
    [file] = list(tmp_path.glob('profile-v5-*.bin'))
    assert profiles.rows(profiles.read_view(file)) == 777


def test_gunicorn_workers_each_write_their_files_and_lose_nothing(env, raw_march, tmp_path):
    """The real service under gunicorn -w 2 with the shipped settings (the model loaded once, before the port opens)
    and the profiler as its hook, each worker profiling in a child of its own, as app.py does (profiling in the
    worker itself is the same writer, tested above): SIGTERM a worker, then the master."""
    import psutil, requests
    gunicorn = Path(sys.executable).parent / 'gunicorn'
    if not gunicorn.exists(): pytest.skip('gunicorn is not installed')
    (tmp_path / 'live_app.py').write_text(
        'from taxi_duration.live import LiveProfiler\nfrom taxi_duration.serve import app_from_env\n'
        'p = LiveProfiler(window_seconds=3600, separate_process=True, start_now=False)\n'
        'app = app_from_env(on_predictions=p.record, on_rejected=p.rejected, on_start=p.start)\n')
    mdir, port = tmp_path / 'monitoring', free_port()
    e = dict(os.environ, MONITORING_DIR=str(mdir), PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}', WHYLOGS_NO_ANALYTICS='1',
             REFRESH_SECONDS='0')
    base = f'http://127.0.0.1:{port}'
    access = tmp_path / 'access.log'  # one line per request: the pid of the worker that answered it
    proc = start([str(gunicorn), '-c', str(ROOT / 'gunicorn.conf.py'), '-w', '2', '-b', f'127.0.0.1:{port}', '--graceful-timeout', '20',
                  '--access-logfile', str(access), '--access-logformat', '%(p)s %(U)s', 'live_app:app'],
                 url=base + '/health', cwd=tmp_path, env=e, stdout=subprocess.DEVNULL)
    try:
        fr = live_frame(raw_march).sample(1200, random_state=0)  # a day's worth, spread over the month
        rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in fr[RIDE_COLUMNS].to_dict('records')]
        answered, pids = 0, set()
        for i in range(0, len(rides), 4):  # fresh connections, so both workers get requests
            r = requests.post(base + '/predict', json=rides[i:i + 4], headers={'Connection': 'close'}, timeout=10)
            assert r.status_code == 200
            answered += len(r.json())
        workers = [int(x) for x in subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert len(workers) == 2
        helpers = [c for w in workers for c in psutil.Process(w).children()]  # the profiling children
        assert len(helpers) == 2
        os.kill(workers[0], signal.SIGTERM)  # one worker stops (gunicorn starts another)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)     # then the whole service
        proc.wait(timeout=40)
    finally:
        stop(proc)
    alive = [h for h in helpers if h.is_running() and h.status() != psutil.STATUS_ZOMBIE]
    assert alive == []  # no profiling child outlives its worker
    files = sorted(mdir.glob('profile-*.bin'))
    assert files
    assert list(mdir.glob('.*')) == []
    total = sum(profiles.rows(profiles.read_view(f)) for f in files)
    assert answered == len(rides)
    assert total == answered
    pids = {f.name.split('-')[-3] for f in files}
    answering = set(re.findall(r'<(\d+)> /predict', access.read_text()))  # which workers answered is gunicorn's lottery
    assert answering <= pids  # every worker that answered rides wrote its own file, the one stopped alone included
    assert run_cli('--profiles', str(mdir), '--report', str(tmp_path / 'r.html')) == 0


def test_through_the_flask_app(env, model, reference, raw_march, tmp_path):
    "The serve helper's app with the profiler as `on_predictions`: real rides quiet, kilometres fire."
    serve = pytest.importorskip('taxi_duration.serve')
    from taxi_duration import served
    for scenario, expected in ((None, 0), ('km', 3)):
        d = tmp_path / str(scenario)
        prof = live.LiveProfiler(d, window_seconds=3600, handle_sigterm=False)
        client = serve.create_app(served.ServedModel.fixed(model, reference.version), on_predictions=prof.record,
                                  on_rejected=prof.rejected).test_client()
        raw = raw_march if scenario is None else make_scenario(raw_march, scenario)
        fr = live_frame(raw).sample(3000, random_state=0)
        rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in fr[RIDE_COLUMNS].to_dict('records')]
        for i in range(0, len(rides), 50):
            r = client.post('/predict', json=rides[i:i + 50])
            assert r.status_code == 200, r.get_json()
        prof.close()
        assert prof.recorded == len(rides)
        assert prof.errors == 0
        assert run_cli('--profiles', str(d), '--report', str(d / 'r.html')) == expected


def test_a_few_hours_of_traffic_are_not_judged(env, reference, model, raw_march, tmp_path):
    "The first rides of a Monday morning differ from a month's; drift waits for a day of traffic."
    fr = live_frame(raw_march).iloc[:1200]  # the file's first rides: 1 March from midnight
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    drive(prof, fr, model, reference.version)
    prof.close()
    res = monitor.monitor_profiles(tmp_path / 'p', reference)
    assert res.healthy
    assert all('min_days' in f.note for f in res.findings if f.kind in ('drift', 'prediction'))
    strict = monitor.monitor_profiles(tmp_path / 'p', reference, verdicts.thresholds(['min_days=0']))
    assert not strict.healthy  # judged anyway, it would have raised false alarms


def test_refused_rides_fire_through_the_service(env, model, reference, tmp_path):
    """A feed that starts sending 5 % of its rides without DOLocationID, through the real app: those
    rides get a 400, so no missing value ever reaches a profile (`missing_rise` cannot see it); the
    service reports the refusals to the profiler and `rejected_share` fires. The same traffic with every
    ride intact stays quiet (a real ride the service refuses would be a typo, at most a couple). One ride per
    request, as the page and most clients send them; a seeded 2,000-row March sample still holds more than
    min_rows rides over the month once prepared, so the check is judged."""
    from taxi_duration import cli, serve, served
    frame, _ = load(str(sample_file('03', tmp_path, n=2000)))
    rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in frame[RIDE_COLUMNS].to_dict('records')]
    assert len(rides) >= verdicts.Thresholds().min_rows
    cut = np.random.default_rng(0).random(len(rides)) < 0.05
    results, refused_intact = {}, None
    for case in ('healthy', 'broken'):
        d = tmp_path / case
        prof = live.LiveProfiler(d / 'profiles', window_seconds=3600, handle_sigterm=False)
        client = serve.create_app(served.ServedModel.fixed(model, reference.version), on_predictions=prof.record,
                                  on_rejected=prof.rejected).test_client()
        codes = []
        for ride, bad in zip(rides, cut):
            if case == 'broken' and bad: ride = {k: v for k, v in ride.items() if k != 'DOLocationID'}
            codes.append(client.post('/predict', json=ride).status_code)
        prof.close()
        refused = int(sum(c == 400 for c in codes))
        assert set(codes) <= {200, 400}
        assert prof.errors == 0
        if case == 'healthy': refused_intact = np.array(codes) == 400
        expected = refused_intact | cut if case == 'broken' else refused_intact
        assert prof.refused == refused
        assert refused == int(expected.sum())
        assert prof.recorded == len(rides) - refused
        code = cli.main(['monitor', '--profiles', str(d / 'profiles'), '--report', str(d / 'r.html'),
                         '--alerts-log', str(d / 'alerts.jsonl'), '--webhook-url', ''])
        summary = json.loads((d / 'r.json').read_text())
        rej = {c['column']: c for c in summary['checks'] if c['check'] == 'rejected'}
        assert rej['any field']['status'] != 'skipped'
        assert summary['rows'] == len(rides) - refused
        results[case] = dict(code=code, share=summary['rejected']['share'], checks=rej, summary=summary)
    healthy, broken = results['healthy'], results['broken']
    assert refused_intact.sum() <= 2  # real typos only
    assert healthy['share'] < 0.001
    assert healthy['code'] == 0
    assert healthy['checks']['any field']['status'] == 'ok'
    assert broken['code'] == 3
    assert 0.04 < broken['share'] < 0.06
    assert broken['summary']['rejected']['by_field']['DOLocationID'] == int(cut.sum())
    assert {('rejected', 'any field'), ('rejected', 'DOLocationID')} <= {(a['check'], a['column']) for a in broken['summary']['alerts']}
    assert [a for a in broken['summary']['alerts'] if a['check'] == 'missing'] == []  # the answered rides have no gaps
    [alert] = [json.loads(line) for line in (tmp_path / 'broken' / 'alerts.jsonl').read_text().splitlines()]
    assert any(f['statistic'] == 'rejected_share' and f['column'] == 'DOLocationID' for f in alert['fired'])
    print(f"\nrejected_share: healthy {healthy['share']:.5f} ({int(refused_intact.sum())} of {len(rides)}), "
          f"broken {broken['share']:.4f} ({int((refused_intact | cut).sum())} of {len(rides)})")


def _distance_days(raw, model, version, folder, share_by_day, seed=0):
    """One profile per day of March as the service writes them (stamped with the day), with `share_by_day(day)`
    of each day's rides sent without a distance (the service answers them without it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fr, rng = live_frame(raw), np.random.default_rng(seed)
    for day, g in fr.groupby(fr.pickup_datetime.dt.normalize()):
        if day.month != 3: continue
        g = g.assign(trip_distance=g.trip_distance.where(rng.random(len(g)) >= share_by_day(day.day)))
        stamp = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc)
        view = profiles.profile(profiles.monitor_frame(g, profiles.score_rides(model, g)), timestamp=stamp,
                                metadata={'model_version': version})
        (folder / f'profile-v{version}-{stamp:%Y%m%d}.bin').write_bytes(view.serialize())


def _fired(summary_path) -> set:
    return {(a['check'], a['column']) for a in json.loads(summary_path.read_text())['alerts']}


def test_riders_who_leave_the_distance_out_are_not_a_broken_feed(env, model, reference, raw_march, tmp_path):
    """A month of live traffic in which 30 % of the riders leave the distance out, every day: `monitor --profiles`
    compares the last day's share with the service's own earlier days, not with the training month (where every
    ride has one), and raises no missing-value alert."""
    _distance_days(raw_march, model, reference.version, tmp_path / 'p', lambda day: 0.3)
    code = run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html'))
    assert ('missing', 'trip_distance') not in _fired(tmp_path / 'r.json')
    summary = json.loads((tmp_path / 'r.json').read_text())
    [missing] = [c for c in summary['checks'] if c['check'] == 'missing' and c['column'] == 'trip_distance']
    assert missing['status'] == 'ok'
    assert code == 0, _fired(tmp_path / 'r.json')


def test_a_feed_that_loses_its_distances_is_an_input_alert(env, model, reference, raw_march, tmp_path):
    """The same riders, and on the last day the feed drops the distance of every ride: a step up from what the
    service saw before, so the missing-value finding on trip_distance fires (and the command exits 3)."""
    _distance_days(raw_march, model, reference.version, tmp_path / 'p', lambda day: 0.3 if day < 31 else 1.0)
    assert run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html')) == 3
    assert ('missing', 'trip_distance') in _fired(tmp_path / 'r.json')


def _gunicorn():
    path = Path(sys.executable).parent / 'gunicorn'
    if not path.exists(): pytest.skip('gunicorn is not installed')
    return path


def test_a_handful_of_rides_without_a_distance_raise_no_alarm(env, raw_march, tmp_path):
    """The real service (app.py under gunicorn) answers 20 rides sent without a distance, as the page and the API
    allow; after it stops, `monitor --profiles` judges its files: too few rows to judge any share, so healthy."""
    import requests
    mdir, port = tmp_path / 'monitoring', free_port()
    base = f'http://127.0.0.1:{port}'
    e = dict(os.environ, MONITORING_DIR=str(mdir), PYTHONPATH=str(ROOT), WHYLOGS_NO_ANALYTICS='1', REFRESH_SECONDS='0')
    proc = start([str(_gunicorn()), '-w', '1', '-b', f'127.0.0.1:{port}', 'app:app'], url=base + '/health', cwd=ROOT,
                 env=e, stdout=subprocess.DEVNULL)
    try:
        fr = live_frame(raw_march).sample(20, random_state=0)
        for r in fr[RIDE_COLUMNS].drop(columns='trip_distance').to_dict('records'):
            got = requests.post(base + '/predict', json=dict(r, pickup_datetime=r['pickup_datetime'].isoformat()),
                                timeout=30)
            assert got.status_code == 200, got.text
    finally:
        assert stop(proc) == 0
    assert sum(profiles.rows(profiles.read_view(f)) for f in mdir.glob('profile-*.bin')) == 20
    code = run_cli('--profiles', str(mdir), '--report', str(tmp_path / 'r.html'))
    assert _fired(tmp_path / 'r.json') == set()
    assert code == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs to fill (mounting one needs root): skip saying why where it cannot be mounted, but fail
    under CI=true when running as root, where it should work."""
    d = tmp_path / 'disk'
    d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode:
        why = f"cannot mount a small tmpfs to fill up ({r.stderr.strip() or r.returncode}); it needs root"
        if os.environ.get('CI') == 'true' and os.geteuid() == 0: pytest.fail(why)
        pytest.skip(why)
    yield d
    subprocess.run(['umount', '-l', str(d)], capture_output=True)


def _fill(folder: Path) -> Path:
    "Fill the file system holding `folder` with one file; that file."
    filler = folder / 'filler'
    with open(filler, 'wb') as f:
        try:
            while True: f.write(b'\0' * 65536); f.flush()
        except OSError: pass
    return filler


def _monitoring(base) -> dict:
    import requests
    return requests.get(base + '/health', timeout=10).json()['monitoring']


def _monitoring_once(base, holds, what: str) -> dict:
    "The service's monitoring status once `holds(status)` (polled for 30 s; else a failure showing the last status)."
    def status():
        m = _monitoring(base)
        return m if holds(m) else None
    return wait_until(status, what, timeout=30, detail=lambda: f'monitoring: {_monitoring(base)}', every=0.3)


def test_a_full_disk_loses_no_ride_and_health_says_degraded(env, raw_march, tmp_path, small_disk):
    """The service under gunicorn, its profiles on a disk that fills up: the windows that cannot be written stay in
    memory, /health says 'degraded' with the rides waiting, and once space is back every answered ride is in a
    file — none dropped."""
    import requests
    (tmp_path / 'live_app.py').write_text(
        'from taxi_duration.live import LiveProfiler\nfrom taxi_duration.serve import app_from_env\n'
        'p = LiveProfiler(window_seconds=2, flush_seconds=0.2, separate_process=True)\n'
        'app = app_from_env(on_predictions=p.record, on_rejected=p.rejected, on_health=p.status)\n')
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    e = dict(os.environ, MONITORING_DIR=str(small_disk), PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}',
             WHYLOGS_NO_ANALYTICS='1', REFRESH_SECONDS='0')
    proc = start([str(_gunicorn()), '-w', '1', '-b', f'127.0.0.1:{port}', 'live_app:app'], url=base + '/health',
                 cwd=tmp_path, env=e, stdout=subprocess.DEVNULL)
    try:
        filler = _fill(small_disk)
        fr = live_frame(raw_march).sample(300, random_state=0)
        rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in fr[RIDE_COLUMNS].to_dict('records')]
        for i in range(0, len(rides), 10):
            assert requests.post(base + '/predict', json=rides[i:i + 10], timeout=30).status_code == 200
        # every window ends within 2 s: then all the answered rides wait in memory, none on disk, none dropped
        degraded = _monitoring_once(base, lambda m: m.get('unwritten') == len(rides),
                                    f'all {len(rides)} answered rides to wait in memory')
        assert degraded['status'] == 'degraded'
        assert degraded['dropped'] == 0
        assert 'No space left' in degraded['problem']
        assert requests.get(base + '/health', timeout=10).json()['status'] == 'degraded'  # the service as a whole says so
        filler.unlink()                              # space is back: the next flush writes what waited
        healthy = _monitoring_once(base, lambda m: m.get('status') == 'ok', "monitoring to say 'ok' again")
        assert healthy['unwritten'] == 0
    finally:
        stop(proc)
    written = sum(profiles.rows(profiles.read_view(f)) for f in small_disk.glob('profile-*.bin'))
    assert written == len(rides)


def _daily_views(raw, model, version) -> dict:
    "One profile view per day of `raw`, {stamp: view}, stamped with the day as a service's windows would be."
    fr, views = live_frame(raw), {}
    for day, g in fr.groupby(fr.pickup_datetime.dt.normalize()):
        stamp = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc)
        views[stamp] = profiles.profile(profiles.monitor_frame(g, profiles.score_rides(model, g)), timestamp=stamp,
                                        metadata={'model_version': version})
    return views


def _write_views(views: dict, version, folder):
    "One profile file per view, named as the service names them."
    folder.mkdir(parents=True, exist_ok=True)
    for stamp, view in views.items(): (folder / f'profile-v{version}-{stamp:%Y%m%d}.bin').write_bytes(view.serialize())


def test_one_bad_day_among_many_alerts(env, reference, model, raw_march, tmp_path):
    """Merged over a month, one broken day reads as a small blip; judged on its own it fires.
    The recent window (the last day of the profiles' own timestamps) is judged separately."""
    normal = _daily_views(raw_march, model, reference.version)
    tenth = raw_march[raw_march.pickup_datetime.dt.day == 10]
    in_km = _daily_views(tenth.assign(trip_distance=tenth.trip_distance * 1.609344), model, reference.version)
    _write_views({**normal, **in_km}, reference.version, tmp_path / 'p')  # the 10th's file replaced by its km twin
    merged = monitor.monitor_profiles(tmp_path / 'p', reference, window_hours=0)
    [distance] = [f for f in merged.findings if f.column == 'trip_distance' and f.kind == 'drift' and 'alone' not in f.note]
    assert distance.status == 'ok'
    assert {(a.kind, a.column) for a in merged.alerts} >= {('drift', 'trip_distance')}
    assert all(a.note.startswith('on 2021-03-10 alone') for a in merged.alerts)
    recent = monitor.monitor_profiles(tmp_path / 'p', reference)  # default: the last 24 h of the profiles, each day alone
    assert recent.files == 1
    assert recent.window == 'last 24 h of the profiles'
    assert not recent.healthy
    healthy = tmp_path / 'healthy'
    _write_views(normal, reference.version, healthy)
    assert monitor.monitor_profiles(healthy, reference).healthy
