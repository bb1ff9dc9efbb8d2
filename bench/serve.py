"""Serving throughput and latency, and batch scoring time, on this machine (loopback only).

    .venv/bin/python bench/serve.py                    # 3 rounds of 5 s per server and level, then 60 s sustained
    .venv/bin/python bench/serve.py --seconds 5 --sustained 0 --skip-batch

In one run, with the same model (a registered champion) and the same load (`wrk`, Debian package
`wrk`, bounded runs against 127.0.0.1), it compares
  * ours:    gunicorn -c gunicorn.conf.py app:app (as shipped, live whylogs monitoring included)
  * ceiling: a Flask endpoint that parses the JSON ride and returns a constant, under the same gunicorn
             settings: what this stack can do on this machine at all
  * mlflow:  mlflow models serve -m models:/taxi-duration@champion --env-manager local -w 2
  * mlflow with OMP_NUM_THREADS=1 (the same one-thread-per-worker setting ours uses), for reference
one server at a time. Each server is measured only once all its workers have loaded, in `--rounds`
rounds per connection level, each with fresh connections: wrk's few keep-alive connections stay
with the worker that accepted them, and which worker wins each accept is a lottery (4 connections
land 2+2, 3+1 or 4+0), so one round measures the lottery as much as the server. A round in which
one worker held every connection (4+0: one process, one GIL, and any server's throughput halves) is
run again, at most --rounds times, and shown in parentheses: it measured the lottery. It prints, per
server and level, the median req/s, p50, the worst p99 of the rounds (wrk corrects for coordinated
omission: one stall of 160 ms shows as a p99 of ~160 ms), errors, the connections each worker held
in every round, and the CPU time (user + system, all the server's processes) per request, which
depends far less on other work on the machine than req/s, with the part of it spent in the workers' own
child processes ("(child)": ours profiles its rides with whylogs there). Then the ratios (ours / ceiling, target
>= 0.5 with p99 <= 10 ms at 4 connections; ours / mlflow), a sustained run of ours (zero errors
expected) and the time to score the real 2021-03 month in batch (target <= 2 s of scoring).

The champion comes from $MLFLOW_TRACKING_URI when that store has one; otherwise the pipeline
trains one on green:2021-01/02 into a temp store first (~1 min). Data: $TAXI_DATA_DIR, else
../shared/data beside the checkout.
"""
from results import recorded  # bench/results.py
import argparse, collections, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RIDE = {'PULocationID': 43, 'DOLocationID': 151, 'trip_distance': 1.01, 'pickup_datetime': '2021-03-05T08:30:00'}
CEILING = """from flask import Flask, request, jsonify
app = Flask(__name__)

@app.post('/predict')
def predict():
    ride = request.get_json()
    return jsonify({'duration': 12.5, 'model_version': '0', 'pickup_datetime': ride.get('pickup_datetime')})

@app.get('/health')
def health(): return {'status': 'ok'}
"""
TRACE = """# gunicorn config written by bench/serve.py --trace: the production settings, and the pauses of each worker timed
import gc, os, sys, time
exec(open(os.environ['BENCH_PRODUCTION_CONF']).read())  # gunicorn reads one config file: this one starts from the shipped one
production_post_worker_init = post_worker_init

def post_worker_init(worker):
    profiler = getattr(sys.modules.get('app'), 'profiler', None)  # app.py's LiveProfiler, if it runs
    if os.environ.get('BENCH_UNTUNED') == '1':  # as it was: heap not frozen, 5 ms GIL turns, profiling in-process
        gc.unfreeze(); sys.setswitchinterval(0.005)
        if profiler is not None: profiler.separate_process = False
    production_post_worker_init(worker)  # what the shipped settings do in a worker: its profiler and alias refresh start
    log = open(os.path.join(os.environ['BENCH_TRACE_DIR'], f'trace-{os.getpid()}.log'), 'a', buffering=1)
    start = {}
    def collected(phase, info):
        if info['generation'] != 2: return
        if phase == 'start': start[0] = time.perf_counter()
        else: log.write(f"{time.time():.3f} gc2 {1e3 * (time.perf_counter() - start[0]):.2f}\\n")
    gc.callbacks.append(collected)
    if profiler is not None:
        flush = profiler._flush
        def timed(final):
            t0 = time.perf_counter()
            try: return flush(final)
            finally: log.write(f"{time.time():.3f} flush {1e3 * (time.perf_counter() - t0):.2f}\\n")
        profiler._flush = timed
"""
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = %s
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def champion_store(tmp: Path, data_dir: str) -> str:
    "A tracking URI with a champion: $MLFLOW_TRACKING_URI if it has one, else a freshly trained temp store."
    uri = os.environ.get('MLFLOW_TRACKING_URI')
    if uri:
        from taxi_duration.registry import champion
        if (not uri.startswith('sqlite:///') or Path(uri[10:]).exists()) and champion() is not None: return uri
        print(f'bench: no champion in {uri}; training one in a temp store', file=sys.stderr)
    uri = f'sqlite:///{tmp}/mlflow.db'
    p = subprocess.run([str(BIN / 'taxi-duration'), 'pipeline', '--train_data=green:2021-01', '--validation_data=green:2021-02'],
                       env=dict(os.environ, MLFLOW_TRACKING_URI=uri, TAXI_DATA_DIR=data_dir), cwd=tmp, capture_output=True, text=True)
    if p.returncode: sys.exit(f'bench: training failed:\n{p.stderr[-2000:]}')
    return uri


class Server:
    "A server process on a loopback port, stopped (whole process group) on exit."
    def __init__(self, cmd, env, health: str, port: int, log: Path, ready: str|None=None, workers: int=1):
        self.cmd, self.port, self.health, self.log, self.workers = cmd, port, health, log, workers
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, 'w'), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None: sys.exit(f'bench: {cmd[0]} exited:\n{log.read_text()[-2000:]}')
            try:
                if requests.get(f'http://127.0.0.1:{port}{health}', timeout=2).status_code == 200: break
            except requests.RequestException: pass
            time.sleep(0.3)
        else: self.stop(); sys.exit(f'bench: {cmd[0]} did not come up:\n{log.read_text()[-2000:]}')
        while ready and log.read_text().count(ready) < workers:  # every worker loaded: none joins mid-run
            if time.time() > deadline: self.stop(); sys.exit(f'bench: {workers} workers did not all load:\n{log.read_text()[-2000:]}')
            time.sleep(0.3)
        time.sleep(1)

    def cpu_seconds(self) -> tuple[float, float]:
        "CPU seconds (user + system) used so far by the server's own processes (master and workers), and by their children."
        import psutil
        top = psutil.Process(self.proc.pid)
        own = [top] + top.children()
        deeper = [p for p in top.children(recursive=True) if p.pid not in {q.pid for q in own}]  # e.g. profiling children
        cpu = lambda procs: sum(sum(p.cpu_times()[:2]) for p in procs)
        return cpu(own), cpu(deeper)

    def connections(self) -> str:
        "How many of the established connections to the port each process holds, e.g. '2+2'."
        out = subprocess.run(['ss', '-tnpH', 'state', 'established', f'sport = :{self.port}'], capture_output=True, text=True).stdout
        return '+'.join(map(str, sorted(collections.Counter(re.findall(r'pid=(\d+)', out)).values(), reverse=True))) or '?'

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try: self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait()

    def __enter__(self): return self
    def __exit__(self, *a): self.stop()


def _ms(text: str) -> float:
    "A wrk latency ('812.00us', '3.41ms', '1.02s') in milliseconds."
    m = re.match(r'([\d.]+)(us|ms|s)', text)
    return float(m[1]) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[m[2]]


def wrk(url: str, body: dict, seconds: int, connections: int, threads: int, tmp: Path) -> dict:
    "Run wrk against `url` POSTing `body`; req/s, p50/p99 (ms), requests and errors."
    script = tmp / 'post.lua'
    script.write_text(LUA % json.dumps(json.dumps(body)))
    p = subprocess.run(['wrk', f'-t{threads}', f'-c{connections}', f'-d{seconds}s', '--latency', '--timeout', '5s', '-s', str(script), url],
                       capture_output=True, text=True, timeout=seconds + 60)
    out = p.stdout
    lat = dict(re.findall(r'^\s+(50|99)%\s+(\S+)', out, re.M))
    sock = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out)
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    return dict(rps=float(re.search(r'Requests/sec:\s+([\d.]+)', out)[1]), p50=_ms(lat['50']), p99=_ms(lat['99']),
                requests=int(re.search(r'(\d+) requests in', out)[1]),
                errors=(sum(map(int, sock.groups())) if sock else 0) + (int(non2xx[1]) if non2xx else 0))


def rounds(server: Server, url: str, body: dict, seconds: int, connections: int, threads: int, n: int, tmp: Path) -> dict:
    "`n` wrk rounds, fresh connections each; median req/s and p50, worst p99, requests, errors, CPU ms a request."
    runs, spread, t0, again = [], [], time.time(), 0
    while len(runs) < n:
        seen = {}
        spy = threading.Timer(min(1.0, seconds / 2), lambda: seen.update(c=server.connections()))
        cpu0 = server.cpu_seconds(); spy.start()
        r = wrk(url, body, seconds, connections, threads, tmp)
        spy.join(); cpu1 = server.cpu_seconds(); r['cpu'], r['cpu_children'] = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        if server.workers > 1 and connections > 1 and seen.get('c') == str(connections) and again < n:
            again += 1; spread.append(f"({seen['c']})"); continue  # one worker held them all: run the round again
        runs.append(r); spread.append(seen.get('c', '?'))
    requests = sum(r['requests'] for r in runs)
    return dict(t0=t0, t1=time.time(), rps=statistics.median(r['rps'] for r in runs), p50=statistics.median(r['p50'] for r in runs),
                p99=max(r['p99'] for r in runs), requests=requests, errors=sum(r['errors'] for r in runs),
                cpu_ms=sum(r['cpu'] + r['cpu_children'] for r in runs) / max(requests, 1) * 1e3,
                cpu_children_ms=sum(r['cpu_children'] for r in runs) / max(requests, 1) * 1e3, spread=' '.join(spread))


def in_process(tmp: Path, n: int=2000) -> dict:
    "Milliseconds one request costs inside the process (WSGI call, no HTTP): ours (and its predict), the ceiling's app."
    import io, datetime as dt
    from taxi_duration.serve import app_from_env
    from taxi_duration.train import predict
    ours, body = app_from_env(), json.dumps(RIDE).encode()
    import importlib.util
    (tmp / 'ceiling_in_process.py').write_text(CEILING)
    spec = importlib.util.spec_from_file_location('ceiling_in_process', tmp / 'ceiling_in_process.py')
    ceiling = importlib.util.module_from_spec(spec); sys.modules[spec.name] = ceiling; spec.loader.exec_module(ceiling)
    def call(app):
        env = {'REQUEST_METHOD': 'POST', 'PATH_INFO': '/predict', 'SERVER_NAME': 'bench', 'SERVER_PORT': '80',
               'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.url_scheme': 'http', 'CONTENT_TYPE': 'application/json',
               'CONTENT_LENGTH': str(len(body)), 'wsgi.input': io.BytesIO(body)}
        return b''.join(app.wsgi_app(env, lambda status, headers: None))
    model, ride = ours.extensions['taxi_duration'].current.model, [dict(RIDE, pickup_datetime=dt.datetime(2021, 3, 5, 8, 30))]
    def best_ms(fn):  # best of 5 runs: the least disturbed by other work
        for _ in range(200): fn()
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n // 5): fn()
            runs.append((time.perf_counter() - t0) / (n // 5) * 1e3)
        return min(runs)
    out = dict(ours=best_ms(lambda: call(ours)), predict=best_ms(lambda: predict(model, ride)),
               ceiling=best_ms(lambda: call(ceiling.app)))
    ours.extensions['taxi_duration'].stop()
    return out


def pauses(trace_dir: Path, t0: float, t1: float) -> str:
    "The workers' full (generation-2) collections and profiling flushes between t0 and t1: count and longest."
    events = collections.defaultdict(list)
    for f in trace_dir.glob('trace-*.log'):
        for line in f.read_text().splitlines():
            t, kind, ms = line.split()
            if t0 <= float(t) <= t1: events[kind].append(float(ms))
    return '; '.join(f"{k} {len(v)}x, longest {max(v):.0f} ms" for k, v in sorted(events.items())) or 'no full collection'


def row(name, c, r) -> str:
    return (f"{name:<44} {c:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['requests']:>9} {r['errors']:>6} "
            f"{r['cpu_ms']:>7.3f} {r['cpu_children_ms']:>7.3f}  {r['spread']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=int, default=5, help='wrk duration of one round (default %(default)s)')
    ap.add_argument('--rounds', type=int, default=3, help='rounds per server and connection level, fresh connections each (default %(default)s)')
    ap.add_argument('--sustained', type=int, default=60, help='sustained run of ours in seconds; 0 skips (default %(default)s)')
    ap.add_argument('--connections', default='2,4', help='wrk connections, a comma-separated list (default %(default)s)')
    ap.add_argument('--threads', type=int, default=1, help='wrk threads (default %(default)s)')
    ap.add_argument('--skip-batch', action='store_true', help='do not time batch scoring')
    ap.add_argument('--skip-mlflow', action='store_true', help='measure ours and the ceiling only')
    ap.add_argument('--trace', action='store_true', help="time the gunicorn workers' full garbage collections and "
                    "profiling flushes, and add ours as it was before its tuning (heap not frozen, 5 ms GIL turns, "
                    "profiling in the worker process)")
    a = ap.parse_args()
    if not shutil.which('wrk'): sys.exit('bench: needs wrk (apt-get install -y wrk)')
    data_dir = os.environ.get('TAXI_DATA_DIR') or str(ROOT.parent / 'shared' / 'data')
    os.environ.update(MLFLOW_DISABLE_TELEMETRY='true', DO_NOT_TRACK='true', WHYLOGS_NO_ANALYTICS='1')
    with tempfile.TemporaryDirectory(prefix='bench-serve-') as tmp:
        tmp = Path(tmp)
        uri = champion_store(tmp, data_dir)
        os.environ['MLFLOW_TRACKING_URI'] = uri
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow runs `uvicorn`
                   MONITORING_DIR=str(tmp / 'monitoring'))  # ours runs as shipped: live whylogs profiling on
        import runpy
        (tmp / 'ceiling.py').write_text(CEILING)
        conf = ROOT / 'gunicorn.conf.py'  # the production settings, for ours and the ceiling alike
        gunicorn = [str(BIN / 'gunicorn'), '-c', str(conf), '-b', '127.0.0.1:{port}']
        workers = runpy.run_path(str(conf))['workers']
        configs = [
            ('ours: gunicorn app:app', gunicorn + ['app:app'], env, '/health', '/predict', RIDE),
            ('ceiling: constant Flask endpoint', gunicorn + ['--chdir', str(tmp), 'ceiling:app'], env, '/health', '/predict', RIDE),
            ('mlflow models serve -w 2', [str(BIN / 'mlflow'), 'models', 'serve', '-m', 'models:/taxi-duration@champion',
             '--env-manager', 'local', '-w', '2', '-h', '127.0.0.1', '-p', '{port}'], env,
             '/ping', '/invocations', {'dataframe_records': [RIDE]}),
            ('mlflow models serve -w 2, OMP_NUM_THREADS=1', None, dict(env, OMP_NUM_THREADS='1'), '/ping', '/invocations',
             {'dataframe_records': [RIDE]}),
        ]
        configs[3] = (configs[3][0], configs[2][1]) + configs[3][2:]
        if a.skip_mlflow: configs = configs[:2]
        trace_dir = tmp / 'trace'
        if a.trace:
            trace_dir.mkdir(); (tmp / 'trace.py').write_text(TRACE)
            configs = [(n, c[:1] + ['-c', str(tmp / 'trace.py')] + c[1:] if c[0].endswith('gunicorn') else c, dict(e, BENCH_TRACE_DIR=str(trace_dir), BENCH_PRODUCTION_CONF=str(conf)),
                        *rest) for n, c, e, *rest in configs]
            configs.insert(1, ('ours, untuned (as before)', configs[0][1], dict(configs[0][2], BENCH_UNTUNED='1'), *configs[0][3:]))
        levels = [int(c) for c in a.connections.split(',')]
        print(f'model: models:/taxi-duration@champion in {uri}\n'
              f'load:  wrk -t{a.threads} -c{{{a.connections}}} -d{a.seconds}s --latency, {a.rounds} rounds each, POST of one ride, '
              'one server at a time, loopback\n'
              f'cpu:   {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews all figures)\n')
        cost = in_process(tmp)
        print(f"in process, one request through the WSGI app (best of 5 x 400 calls, no HTTP, no monitoring): ours "
              f"{cost['ours']:.3f} ms (train.predict {cost['predict']:.3f} ms), ceiling {cost['ceiling']:.3f} ms\n")
        print(f"{'server (median of rounds; p99: worst round)':<44} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'requests':>9} {'errors':>6} {'CPU ms':>7} {'(child)':>7}  connections per process, each round")
        results = {}
        for i, (name, cmd, cenv, health, path, body) in enumerate(configs):
            port = free_port()
            ready = 'Booting worker' if name.startswith('ours') else None  # gunicorn logs this once per worker, forked with the model loaded
            with Server([part.format(port=port) for part in cmd], cenv, health, port, tmp / f'{i}.log', ready, workers) as server:
                url = f'http://127.0.0.1:{port}{path}'
                close = {'Connection': 'close'}  # no idle connection left behind to count as wrk's
                check = requests.post(url, json=body, timeout=30, headers=close)
                assert check.status_code == 200, check.text
                for _ in range(50): requests.post(url, json=body, timeout=30, headers=close)  # warm up
                for c in levels:
                    results[name, c] = r = rounds(server, url, body, a.seconds, c, a.threads, a.rounds, tmp)
                    print(row(name, c, r), flush=True)
                    if a.trace: print(f"{'':<44} {'':>5} workers' pauses: {pauses(trace_dir, r['t0'], r['t1'])}", flush=True)
        print(f'\nload average after: {os.getloadavg()[0]:.2f}')
        for c in levels:
            ours, ceiling = results['ours: gunicorn app:app', c], results['ceiling: constant Flask endpoint', c]
            theirs = results.get(('mlflow models serve -w 2', c))
            print(f"ratios at {c} connections: ours / ceiling {ours['rps'] / ceiling['rps']:.2f} "
                  f"(CPU a request: ceiling / ours {ceiling['cpu_ms'] / ours['cpu_ms']:.2f}); "
                  + (f"ours / mlflow models serve {ours['rps'] / theirs['rps']:.1f}x; " if theirs else '')
                  + f"ours p99 {ours['p99']:.1f} ms")
            if ('ours, untuned (as before)', c) in results:
                old = results['ours, untuned (as before)', c]
                print(f"{'':<25}untuned (as before) / ceiling {old['rps'] / ceiling['rps']:.2f}; its p99 {old['p99']:.1f} ms")
        if a.sustained:
            port, conns = free_port(), levels[-1]
            with Server([part.format(port=port) for part in configs[0][1]], configs[0][2], '/health', port, tmp / 'sustained.log',
                        'Booting worker', workers):
                r = wrk(f'http://127.0.0.1:{port}/predict', RIDE, a.sustained, conns, a.threads, tmp)
                alive = requests.get(f'http://127.0.0.1:{port}/health', timeout=5).status_code == 200
            print(f"\nsustained {a.sustained} s at {conns} connections, ours: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                  f"{r['requests']} requests, {r['errors']} errors, healthy afterwards: {alive}")
        if not a.skip_batch:
            os.environ['TAXI_DATA_DIR'] = data_dir
            from taxi_duration.score import score_data
            t0 = time.perf_counter()
            out, s = score_data('green:2021-03')
            print(f"\nbatch: green:2021-03, {s.scored:,} rides scored in {s.seconds:.2f} s "
                  f"(target <= 2 s; read + score {time.perf_counter() - t0:.2f} s), rmse {s.rmse:.3f} on the 1-60 min rides")


if __name__ == '__main__':
    with recorded():  # the output also goes to bench/RESULTS.md
        main()
