"""Serving throughput and latency, and batch scoring time, on this machine (loopback only).

    .venv/bin/python bench/serve.py                    # 10 s per server, then 60 s sustained
    .venv/bin/python bench/serve.py --seconds 5 --sustained 0

In one run, with the same model (a registered champion) and the same load (`wrk`, Debian package
`wrk`, bounded runs against 127.0.0.1), it compares
  * ours:    gunicorn with serve.GUNICORN_ARGS app:app (as shipped, live whylogs monitoring included)
  * ceiling: a Flask endpoint that parses the JSON ride and returns a constant, under the same gunicorn
             settings: what this stack can do on this machine at all
  * mlflow:  mlflow models serve -m models:/taxi-duration@champion --env-manager local -w 2
  * mlflow with OMP_NUM_THREADS=1 (the same one-thread-per-worker setting ours uses), for reference
one server at a time, and prints req/s, p50/p99 latency, errors and the ratios (ours / ceiling;
ours / mlflow, target >= 5x with p99 <= 20 ms). Then a sustained run of ours (zero errors expected) and the
time to score the real 2021-03 month in batch (target <= 2 s of scoring).

The champion comes from $MLFLOW_TRACKING_URI when that store has one; otherwise the pipeline
trains one on green:2021-01/02 into a temp store first (~1 min). Data: $TAXI_DATA_DIR, else
../shared/data beside the checkout.
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
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
    def __init__(self, cmd, env, health: str, port: int, log: Path):
        self.cmd, self.port, self.health, self.log = cmd, port, health, log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, 'w'), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None: sys.exit(f'bench: {cmd[0]} exited:\n{log.read_text()[-2000:]}')
            try:
                if requests.get(f'http://127.0.0.1:{port}{health}', timeout=2).status_code == 200: break
            except requests.RequestException: pass
            time.sleep(0.3)
        else: self.stop(); sys.exit(f'bench: {cmd[0]} did not come up:\n{log.read_text()[-2000:]}')

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


def row(name, c, r) -> str:
    return f"{name:<44} {c:>5} {r['rps']:>9.0f} {r['p50']:>9.2f} {r['p99']:>9.2f} {r['requests']:>9} {r['errors']:>7}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=int, default=10, help='wrk duration per server (default %(default)s)')
    ap.add_argument('--sustained', type=int, default=60, help='sustained run of ours in seconds; 0 skips (default %(default)s)')
    ap.add_argument('--connections', default='2,4', help='wrk connections, a comma-separated list (default %(default)s)')
    ap.add_argument('--threads', type=int, default=1, help='wrk threads (default %(default)s)')
    ap.add_argument('--skip-batch', action='store_true', help='do not time batch scoring')
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
        from taxi_duration.serve import GUNICORN_ARGS
        (tmp / 'ceiling.py').write_text(CEILING)
        gunicorn = [str(BIN / 'gunicorn'), *GUNICORN_ARGS.split(), '-b', '127.0.0.1:{port}']
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
        levels = [int(c) for c in a.connections.split(',')]
        print(f'model: models:/taxi-duration@champion in {uri}\n'
              f'load:  wrk -t{a.threads} -c{{{a.connections}}} -d{a.seconds}s --latency, POST of one ride, one server at a time, loopback\n'
              f'cpu:   {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews all figures)\n')
        print(f"{'server':<44} {'conns':>5} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>7}")
        results = {}
        for i, (name, cmd, cenv, health, path, body) in enumerate(configs):
            port = free_port()
            with Server([part.format(port=port) for part in cmd], cenv, health, port, tmp / f'{i}.log'):
                url = f'http://127.0.0.1:{port}{path}'
                check = requests.post(url, json=body, timeout=30)
                assert check.status_code == 200, check.text
                for _ in range(50): requests.post(url, json=body, timeout=30)  # warm up every worker
                for c in levels:
                    results[name, c] = r = wrk(url, body, a.seconds, c, a.threads, tmp)
                    print(row(name, c, r), flush=True)
        print()
        for c in levels:
            ours, ceiling, theirs = (results[configs[i][0], c] for i in (0, 1, 2))
            print(f"ratios at {c} connections: ours / ceiling {ours['rps'] / ceiling['rps']:.2f}; "
                  f"ours / mlflow models serve {ours['rps'] / theirs['rps']:.1f}x; ours p99 {ours['p99']:.1f} ms")
        if a.sustained:
            port, conns = free_port(), levels[-1]
            with Server([part.format(port=port) for part in configs[0][1]], env, '/health', port, tmp / 'sustained.log'):
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
    main()
