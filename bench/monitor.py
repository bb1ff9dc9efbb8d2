"""What live monitoring costs the service, on this machine (loopback only).

    .venv/bin/python bench/monitor.py                 # 10 s per run, 2 rounds each way
    .venv/bin/python bench/monitor.py --seconds 5 --rounds 1

1. The hook itself: `LiveProfiler.record` for one ride against a no-op hook and against the
   naive alternative (`why.log` of a one-row frame per request), per call.
2. The service: the same app (`serve.create_app`) under gunicorn with gunicorn.conf.py, without and with the
   profiler as its `on_predictions` hook, alternated (ABBA) in one run under the same `wrk` load;
   prints req/s, p99, the throughput cost (target: <= 5 %) and the CPU time per request of the
   gunicorn processes, which is far less sensitive to other load on the machine than req/s. After the runs it checks that
   the profiles hold exactly the rides the service answered.

The champion comes from $MLFLOW_TRACKING_URI when that store has one; otherwise the pipeline
trains one on green:2021-01/02 into a temp store first (~1 min; data from $TAXI_DATA_DIR, else
../shared/data).
"""
from results import recorded  # bench/results.py
import argparse, json, os, re, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}
APP = """import os
from taxi_duration.serve import app_or_exit
os.environ['REFRESH_SECONDS'] = '0'
hooks = {}
if os.environ.get('BENCH_MONITOR') == '1':
    from taxi_duration.live import LiveProfiler
    p = LiveProfiler(separate_process=True)  # as app.py runs it
    hooks = dict(on_predictions=p.record, on_rejected=p.rejected)
app = app_or_exit(**hooks)  # as app.py: heap settled, GIL turns set
"""


def per_call(fn, n: int) -> float:
    "Median microseconds per call of fn() over 5 runs of n calls."
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(runs))


def bench_hook(n: int):
    import datetime as dt
    import pandas as pd
    import whylogs as why
    from taxi_duration.live import LiveProfiler
    ride = dict(RIDE, pickup_datetime=dt.datetime(2021, 3, 5, 8, 30))
    pred = np.array([9.5])
    with tempfile.TemporaryDirectory() as d:
        prof = LiveProfiler(d, handle_sigterm=False)
        noop = lambda rides, p, v: None
        base = per_call(lambda: noop([ride], pred, '1'), n)
        rec = per_call(lambda: prof.record([ride], pred, '1'), n)
        prof.close()
        assert prof.errors == 0
        # the thread's own pace: rides profiled per second, from ride dicts (what it does off the request path)
        rides = [ride] * 10_000
        from taxi_duration.profiles import monitor_frame, profile
        t0 = time.perf_counter(); profile(monitor_frame(rides, np.full(len(rides), 9.5))); pace = len(rides) / (time.perf_counter() - t0)
        frame = pd.DataFrame([dict(ride, prediction=9.5)])
        naive = per_call(lambda: why.log(frame), max(n // 200, 50))
    print(f'hook, per call ({n} calls x 5): no-op {base:.2f} us | LiveProfiler.record {rec:.2f} us '
          f'| why.log of one row {naive:.0f} us')
    print(f'profiling thread: {pace:,.0f} rides/s from ride dicts; in this tight loop (no request work) '
          f'{prof.dropped} of {prof.recorded + prof.dropped} calls hit the buffer cap and were counted as dropped')
    return dict(noop_us=base, record_us=rec, why_log_us=naive, thread_rides_per_s=pace)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def champion_uri(tmp: Path) -> str:
    uri = os.environ.get('MLFLOW_TRACKING_URI')
    if uri:
        from taxi_duration.registry import champion
        if (not uri.startswith('sqlite:///') or Path(uri[10:]).exists()) and champion() is not None: return uri
    data = os.environ.get('TAXI_DATA_DIR') or str(ROOT.parent / 'shared' / 'data')
    uri = f'sqlite:///{tmp}/mlflow.db'
    print('bench: training a champion in a temp store (~1 min)', file=sys.stderr)
    p = subprocess.run([str(BIN / 'taxi-duration'), 'pipeline', '--train_data=green:2021-01', '--validation_data=green:2021-02'],
                       env=dict(os.environ, MLFLOW_TRACKING_URI=uri, TAXI_DATA_DIR=data), cwd=tmp, capture_output=True, text=True)
    if p.returncode: sys.exit(f'bench: training failed:\n{p.stderr[-2000:]}')
    return uri


def serve_run(tmp: Path, uri: str, monitor: bool, seconds: int, mdir: Path) -> dict:
    "Start gunicorn (gunicorn.conf.py), load it with wrk for `seconds`, stop it (SIGTERM); req/s, p99, requests."
    import requests
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, BENCH_MONITOR='1' if monitor else '0', MONITORING_DIR=str(mdir),
               PYTHONPATH=f'{tmp}{os.pathsep}{ROOT}', WHYLOGS_NO_ANALYTICS='1', MLFLOW_DISABLE_TELEMETRY='true')
    log = open(tmp / f'gunicorn-{int(monitor)}.log', 'a')
    proc = subprocess.Popen([str(BIN / 'gunicorn'), '-c', str(ROOT / 'gunicorn.conf.py'), '-b', f'127.0.0.1:{port}', 'bench_app:app'],
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > deadline: sys.exit(f'bench: gunicorn did not start; see {log.name}')
            try:
                if requests.get(f'http://127.0.0.1:{port}/health', timeout=1).ok: break
            except requests.RequestException: time.sleep(0.3)
        time.sleep(3)  # both workers up, and their profiling children done importing: not a cost of serving
        lua = tmp / 'post.lua'
        lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(json.dumps(RIDE))}\n')
        cpu0 = _cpu_seconds(proc.pid)
        out = subprocess.run(['wrk', '-t1', '-c4', f'-d{seconds}s', '--latency', '-s', str(lua), f'http://127.0.0.1:{port}/predict'],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        time.sleep(2.5)  # let the profiler thread finish its last batch (it wakes every 2 s)
        cpu = _cpu_seconds(proc.pid) - cpu0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    total = int(re.search(r'(\d+) requests in', out).group(1))
    p99 = re.search(r'99%\s+([\d.]+)(us|ms|s)', out)
    p99_ms = float(p99.group(1)) * {'us': 1e-3, 'ms': 1, 's': 1e3}[p99.group(2)]
    non2xx = int(m.group(1)) if (m := re.search(r'Non-2xx or 3xx responses: (\d+)', out)) else 0
    return dict(rps=rps, p99_ms=p99_ms, requests=total, non2xx=non2xx, cpu_ms_per_request=cpu / max(total, 1) * 1e3)


def _cpu_seconds(pid: int) -> float:
    "CPU seconds (user + system) used so far by gunicorn's master, its workers and their profiling children."
    import psutil
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seconds', type=int, default=10)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--calls', type=int, default=100_000)
    a = ap.parse_args()
    os.environ.setdefault('WHYLOGS_NO_ANALYTICS', '1'); os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
    print(f'load average at the start: {os.getloadavg()[0]:.2f}')
    hook = bench_hook(a.calls)
    if not subprocess.run(['which', 'wrk'], capture_output=True).stdout:
        print('bench: wrk not installed (Debian package wrk): service part skipped'); return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / 'bench_app.py').write_text(APP)
        uri = champion_uri(tmp)
        mdir = tmp / 'monitoring'
        runs = {False: [], True: []}
        for r in range(a.rounds):
            for monitor in ((False, True) if r % 2 == 0 else (True, False)):  # ABBA: no order bias
                res = serve_run(tmp, uri, monitor, a.seconds, mdir)
                runs[monitor].append(res)
                print(f"round {r + 1} {'with   ' if monitor else 'without'} monitoring: {res['rps']:8.0f} req/s  p99 {res['p99_ms']:.2f} ms  "
                      f"CPU {res['cpu_ms_per_request']:.3f} ms/request ({res['requests']} requests, {res['non2xx']} non-2xx)")
        off, on = (np.mean([x['rps'] for x in runs[m]]) for m in (False, True))
        # each round runs without then with, back to back: the median of the paired costs resists load from elsewhere
        cost = float(np.median([(x['rps'] - y['rps']) / x['rps'] * 100 for x, y in zip(runs[False], runs[True])]))
        print(f'load average at the end: {os.getloadavg()[0]:.2f} (above ~2 means other work shared these 2 cores: rerun)')
        from taxi_duration.monitor import read_profiles
        from taxi_duration.profiles import rows
        found, problems = read_profiles(mdir)
        profiled = sum(rows(f['view']) for f in found)
        answered = sum(x['requests'] - x['non2xx'] for x in runs[True])
        print(f'throughput: {off:.0f} req/s without, {on:.0f} with monitoring (means); median paired cost {cost:+.1f} % (target <= 5 %)')
        # CPU time per request does not depend on how busy the machine is the way req/s does
        cpu_off, cpu_on = (float(np.median([x['cpu_ms_per_request'] for x in runs[m]])) for m in (False, True))
        cpu_cost = (cpu_on - cpu_off) / cpu_off * 100
        print(f'CPU per request (median): {cpu_off:.3f} ms without, {cpu_on:.3f} ms with monitoring: cost {cpu_cost:+.1f} % '
              f'(with 2 busy cores, throughput cost ~ CPU cost)')
        print(f'profiles: {len(found)} files, {profiled} rides profiled; wrk counted {answered} answered '
              f'(wrk does not count requests still in flight when it stops); problems: {problems or "none"}')
        print(json.dumps(dict(hook, rps_without=off, rps_with=on, cost_percent=cost, cpu_cost_percent=cpu_cost,
                              profiled=profiled, answered=answered)))


if __name__ == '__main__':
    with recorded():  # the output also goes to bench/RESULTS.md
        main()
