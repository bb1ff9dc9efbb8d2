"""The live path: the service's hook records real rides into whylogs profiles off the request path;
files per window and per process, nothing lost on SIGTERM (plain process and gunicorn workers),
bounded memory; `monitor --profiles` stays quiet on real traffic and fires on breakage."""
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxi_duration import alerts, checks, live, profiles
from taxi_duration.data import load
from taxi_duration.rides import RIDE_COLUMNS

from monitor_fixtures import SHARED_DATA, run_cli, sample_file

pytest_plugins = ['monitor_fixtures']  # env, reference, model, raw_march: one champion per session

ROOT = Path(__file__).resolve().parent.parent




def drive(profiler, frame: pd.DataFrame, model, version, per_request: int=1, scale: float=1.0):
    "Record the rides of `frame` as the service would: ride dicts, predictions, the model version."
    rides = frame[RIDE_COLUMNS].to_dict('records')
    pred = profiles.score_rides(model, frame) * scale
    for i in range(0, len(rides), per_request):
        profiler.record(rides[i:i + per_request], pred[i:i + per_request], version)


def live_frame(raw):
    "Completed rides in the service's shape (what a client sends), keeping rides with gaps."
    return checks.completed_rides(raw)


LIVE_EXPECTED = {
    'km': {('drift', 'trip_distance'), ('prediction', 'prediction')},
    'zones_constant': {('drift', 'PULocationID'), ('drift', 'DOLocationID')},
    'zones_scrambled': {('drift', 'PULocationID'), ('drift', 'DOLocationID')},
    'missing': {('missing', 'trip_distance'), ('missing', 'PULocationID')},
    'utc_clock': {('drift', 'pickup_hour')},
    'long_rides': {('drift', 'trip_distance'), ('prediction', 'prediction')},
}


def test_real_traffic_through_the_profiler_stays_quiet(env, reference, model, raw_march, tmp_path):
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    fr = live_frame(raw_march)
    drive(prof, fr, model, reference.version)
    prof.close()
    assert prof.recorded == len(fr) and prof.dropped == prof.errors == 0
    assert run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html')) == 0
    summary = json.loads((tmp_path / 'r.json').read_text())
    assert summary['rows'] == len(fr) and summary['healthy']


@pytest.mark.parametrize('scenario', list(LIVE_EXPECTED) + ['predictions_x1.3'])
def test_live_breakage_fires(env, reference, model, raw_march, tmp_path, scenario):
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    if scenario == 'predictions_x1.3':  # a mis-scaled model in production: inputs fine, answers off
        drive(prof, live_frame(raw_march), model, reference.version, per_request=20, scale=1.3)
        expected = {('prediction', 'prediction')}
    else:
        drive(prof, live_frame(checks.make_scenario(raw_march, scenario)), model, reference.version, per_request=20)
        expected = LIVE_EXPECTED[scenario]
    prof.close()
    res = live.monitor_profiles(tmp_path / 'p', reference)
    assert expected <= {(c.check, c.column) for c in res.alerts}, res.alerts
    assert run_cli('--profiles', str(tmp_path / 'p'), '--report', str(tmp_path / 'r.html')) == 3


def test_windows_files_and_report_over_time(env, reference, model, raw_march, tmp_path, monkeypatch):
    "Several windows -> several files, each a readable profile; the report shows them over time."
    clock = [1_700_000_000.0]
    monkeypatch.setattr(live.time, 'time', lambda: clock[0])
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=60, flush_seconds=0.05, handle_sigterm=False)
    fr = live_frame(raw_march).iloc[:6000]
    for part in (fr.iloc[:2000], fr.iloc[2000:4000], fr.iloc[4000:]):
        drive(prof, part, model, reference.version, per_request=10)
        clock[0] += 60
        time.sleep(0.3)  # the thread writes the window that ended
    prof.close()
    files = sorted((tmp_path / 'p').glob('profile-*.bin'))
    assert len(files) == 3 and all(f'-{os.getpid()}-' in f.name for f in files)
    assert not list((tmp_path / 'p').glob('.*'))  # no temporary files left behind
    res = live.monitor_profiles(tmp_path / 'p', reference)
    assert len(res.windows) == 3 and sum(w['rows'] for w in res.windows) == len(fr) == res.rows
    alerts.write_outputs(res, tmp_path / 'r.html')
    assert 'Over time' in (tmp_path / 'r.html').read_text()


def test_memory_is_bounded(tmp_path):
    ride = {'PULocationID': 74, 'DOLocationID': 75, 'trip_distance': 1.5, 'pickup_datetime': pd.Timestamp('2021-03-05 08:30')}
    prof = live.LiveProfiler(tmp_path, max_rows=1000, flush_seconds=3600, batch_rows=10**9, handle_sigterm=False)
    for _ in range(5000): prof.record([ride], np.array([9.0]), '1')
    assert prof.recorded == 1000 and prof.dropped == 4000 and prof._buffered == 1000
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
    files = list(tmp_path.glob('profile-v5-*.bin'))
    assert len(files) == 1 and profiles.rows(profiles.read_view(files[0])) == 777


def _free_port() -> int:
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    return port


def _wait_up(url, proc, seconds=60):
    import requests
    t0 = time.time()
    while time.time() - t0 < seconds:
        if proc.poll() is not None: raise AssertionError(f'gunicorn exited: {proc.stderr.read()[-2000:]}')
        try:
            if requests.get(url, timeout=1).status_code == 200: return
        except requests.RequestException: time.sleep(0.3)
    raise AssertionError('the service did not come up')


@pytest.mark.parametrize('separate', [False, True])
def test_gunicorn_workers_each_write_their_files_and_lose_nothing(env, raw_march, tmp_path, separate):
    "The real service under gunicorn -w 2 with the profiler as its hook: SIGTERM a worker, then the master."
    import psutil, requests
    gunicorn = Path(sys.executable).parent / 'gunicorn'
    if not gunicorn.exists(): pytest.skip('gunicorn is not installed')
    (tmp_path / 'live_app.py').write_text(
        'from taxi_duration.live import LiveProfiler\nfrom taxi_duration.serve import app_from_env\n'
        f'p = LiveProfiler(window_seconds=3600, separate_process={separate})\n'
        'app = app_from_env(on_predictions=p.record, on_rejected=p.rejected)\n')
    mdir, port = tmp_path / 'monitoring', _free_port()
    e = dict(os.environ, MONITORING_DIR=str(mdir), PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}', WHYLOGS_NO_ANALYTICS='1',
             REFRESH_SECONDS='0')
    proc = subprocess.Popen([str(gunicorn), '-w', '2', '-b', f'127.0.0.1:{port}', '--graceful-timeout', '20', 'live_app:app'],
                            cwd=tmp_path, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f'http://127.0.0.1:{port}'
        _wait_up(base + '/health', proc)
        fr = live_frame(raw_march).sample(1200, random_state=0)  # a day's worth, spread over the month
        rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in fr[RIDE_COLUMNS].to_dict('records')]
        answered, pids = 0, set()
        for i in range(0, len(rides), 4):  # fresh connections, so both workers get requests
            r = requests.post(base + '/predict', json=rides[i:i + 4], headers={'Connection': 'close'}, timeout=10)
            assert r.status_code == 200
            answered += len(r.json())
        workers = [int(x) for x in subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert len(workers) == 2
        helpers = [c for w in workers for c in psutil.Process(w).children()]  # the profiling children, if separate
        assert len(helpers) == (2 if separate else 0)
        os.kill(workers[0], signal.SIGTERM)  # one worker stops (gunicorn starts another)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)     # then the whole service
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None: proc.kill()
    alive = [h for h in helpers if h.is_running() and h.status() != psutil.STATUS_ZOMBIE]
    assert not alive  # no profiling child outlives its worker
    files = sorted(mdir.glob('profile-*.bin'))
    assert files and not list(mdir.glob('.*'))
    total = sum(profiles.rows(profiles.read_view(f)) for f in files)
    assert total == answered == len(rides)
    pids = {f.name.split('-')[-3] for f in files}
    assert str(workers[0]) in pids  # the worker stopped alone wrote its own file
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
        raw = raw_march if scenario is None else checks.make_scenario(raw_march, scenario)
        fr = live_frame(raw).sample(3000, random_state=0)
        rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in fr[RIDE_COLUMNS].to_dict('records')]
        for i in range(0, len(rides), 50):
            r = client.post('/predict', json=rides[i:i + 50])
            assert r.status_code == 200, r.get_json()
        prof.close()
        assert prof.recorded == len(rides) and prof.errors == 0
        assert run_cli('--profiles', str(d), '--report', str(d / 'r.html')) == expected


def test_a_few_hours_of_traffic_are_not_judged(env, reference, model, raw_march, tmp_path):
    "The first rides of a Monday morning differ from a month's; drift waits for a day of traffic."
    fr = live_frame(raw_march).iloc[:1200]  # the file's first rides: 1 March from midnight
    prof = live.LiveProfiler(tmp_path / 'p', window_seconds=3600, handle_sigterm=False)
    drive(prof, fr, model, reference.version)
    prof.close()
    res = live.monitor_profiles(tmp_path / 'p', reference)
    assert res.healthy
    assert all('min_days' in c.note for c in res.checks if c.check in ('drift', 'prediction'))
    strict = live.monitor_profiles(tmp_path / 'p', reference, checks.thresholds(['min_days=0']))
    assert not strict.healthy  # judged anyway, it would have raised false alarms


def test_refused_rides_fire_through_the_service(env, model, reference, tmp_path):
    """A feed that starts sending 5 % of its rides without DOLocationID, through the real app: those
    rides get a 400, so no missing value ever reaches a profile (`missing_rise` cannot see it); the
    service reports the refusals to the profiler and `rejected_share` fires. The same traffic with every
    ride intact stays quiet — though not at 0: the sample holds one 60,382-mile ride, which the service
    rightly refuses. One ride per request, as the page and most clients send them; the seeded 4,000-row
    March sample (3,817 rides over a month once prepared) is above min_rows, so the check is judged."""
    from taxi_duration import cli, serve, served
    frame, _ = load(str(sample_file('03', tmp_path)))
    rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in frame[RIDE_COLUMNS].to_dict('records')]
    assert len(rides) >= checks.Thresholds().min_rows
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
        assert set(codes) <= {200, 400} and prof.errors == 0
        if case == 'healthy': refused_intact = np.array(codes) == 400
        expected = refused_intact | cut if case == 'broken' else refused_intact
        assert prof.refused == refused == int(expected.sum())
        assert prof.recorded == len(rides) - refused
        code = cli.main(['monitor', '--profiles', str(d / 'profiles'), '--report', str(d / 'r.html'),
                         '--alerts-log', str(d / 'alerts.jsonl'), '--webhook-url', ''])
        summary = json.loads((d / 'r.json').read_text())
        rej = {c['column']: c for c in summary['checks'] if c['check'] == 'rejected'}
        assert rej['any field']['status'] != 'skipped' and summary['rows'] == len(rides) - refused
        results[case] = dict(code=code, share=summary['rejected']['share'], checks=rej, summary=summary)
    healthy, broken = results['healthy'], results['broken']
    assert refused_intact.sum() <= 2 and healthy['share'] < 0.001  # real typos only (60,382 miles)
    assert healthy['code'] == 0 and healthy['checks']['any field']['status'] == 'ok'
    assert broken['code'] == 3 and 0.04 < broken['share'] < 0.06
    assert broken['summary']['rejected']['by_field']['DOLocationID'] == int(cut.sum())
    assert {('rejected', 'any field'), ('rejected', 'DOLocationID')} <= {(a['check'], a['column']) for a in broken['summary']['alerts']}
    assert not [a for a in broken['summary']['alerts'] if a['check'] == 'missing']  # the answered rides have no gaps
    [alert] = [json.loads(line) for line in (tmp_path / 'broken' / 'alerts.jsonl').read_text().splitlines()]
    assert any(f['statistic'] == 'rejected_share' and f['column'] == 'DOLocationID' for f in alert['fired'])
    print(f"\nrejected_share: healthy {healthy['share']:.5f} ({int(refused_intact.sum())} of {len(rides)}), "
          f"broken {broken['share']:.4f} ({int((refused_intact | cut).sum())} of {len(rides)})")


def test_a_feed_that_loses_its_distances_is_an_input_alert(env, model, reference, tmp_path):
    """The model answers rides without a distance now (issue 8), so a feed that starts dropping
    trip_distance on 5 % of its rides gets answers, not 400s: the gap reaches the profiles and the
    `missing` check on trip_distance fires. A lost column is still an input alert."""
    from taxi_duration import cli, serve, served
    frame, _ = load(str(sample_file('03', tmp_path)))
    rides = [dict(r, pickup_datetime=r['pickup_datetime'].isoformat()) for r in frame[RIDE_COLUMNS].to_dict('records')]
    cut = np.random.default_rng(0).random(len(rides)) < 0.05
    prof = live.LiveProfiler(tmp_path / 'profiles', window_seconds=3600, handle_sigterm=False)
    client = serve.create_app(served.ServedModel.fixed(model, reference.version), on_predictions=prof.record,
                              on_rejected=prof.rejected).test_client()
    codes = [client.post('/predict', json={k: v for k, v in r.items() if not (bad and k == 'trip_distance')}).status_code
             for r, bad in zip(rides, cut)]
    prof.close()
    assert codes.count(200) >= len(rides) - 2  # answered, all but the real typos
    code = cli.main(['monitor', '--profiles', str(tmp_path / 'profiles'), '--report', str(tmp_path / 'r.html'),
                     '--alerts-log', str(tmp_path / 'alerts.jsonl'), '--webhook-url', ''])
    summary = json.loads((tmp_path / 'r.json').read_text())
    assert code == 3
    assert ('missing', 'trip_distance') in {(a['check'], a['column']) for a in summary['alerts']}


def _daily_profiles(raw, model, version, folder, broken_day=None):
    "One profile file per day of `raw`, stamped with the day (as a service's windows would be); one day in km."
    folder.mkdir(parents=True, exist_ok=True)
    fr = live_frame(raw)
    for day, g in fr.groupby(fr.pickup_datetime.dt.normalize()):
        if day.day == broken_day: g = g.assign(trip_distance=g.trip_distance * 1.609344)
        stamp = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc)
        view = profiles.profile(profiles.monitor_frame(g, profiles.score_rides(model, g)), timestamp=stamp,
                                metadata={'model_version': version})
        (folder / f'profile-v{version}-{stamp:%Y%m%d}.bin').write_bytes(view.serialize())


def test_one_bad_day_among_many_alerts(env, reference, model, raw_march, tmp_path):
    """Issue 9: merged over a month, one broken day reads as a small blip; judged on its own it fires.
    The recent window (the last day of the profiles' own timestamps) is judged separately."""
    _daily_profiles(raw_march, model, reference.version, tmp_path / 'p', broken_day=10)
    merged = live.monitor_profiles(tmp_path / 'p', reference, window_hours=0)
    assert [c for c in merged.checks if c.column == 'trip_distance' and c.check == 'drift'][0].status == 'ok'
    assert {(a.check, a.column) for a in merged.alerts} >= {('drift', 'trip_distance')}
    assert all(a.note.startswith('on 2021-03-10 alone') for a in merged.alerts)
    recent = live.monitor_profiles(tmp_path / 'p', reference)  # default: the last 24 h of the profiles, each day alone
    assert recent.files == 1 and recent.window == 'last 24 h of the profiles' and not recent.healthy
    healthy = tmp_path / 'healthy'
    _daily_profiles(raw_march, model, reference.version, healthy)
    assert live.monitor_profiles(healthy, reference).healthy
