"""Batch scoring at scale: rides/s of the pandas engine vs Spark local[1] vs local[2], and the driver's peak memory.

    PYTHONPATH=. python bench/score_scale.py [--sources 14] [--model gbm] [--model_uri URI]

Data: the real 2021 green months of ../shared/data (or $TAXI_DATA_DIR) — 2021-01, -02, -03 REPEATED in turn
`--sources` times (14 sources = 1,050,000 rides; the same rides several times, so rides/s, not new information).
Model: a champion trained here by the real pipeline on 2021-01/02 in a temp SQLite store (or --model_uri).
Each configuration runs in its own process, so each peak memory is its own: the driver's Python (ru_maxrss)
and, for Spark, the driver JVM's peak resident set (VmHWM, sampled from /proc while it runs).
The pandas engine is `score.score_data` per source in one process (its own thread pool over the cores).
rides/s counts every ride of the files (`rows`; the refused ones get a row with their reason) over the scoring
time. Start-up is printed on its own, not in rides/s, the same for every configuration: the model is loaded once
first (imports of mlflow and scikit-learn, the local copy of the model), and for Spark the SparkSession is started
(JVM launch, ~5 s); the scoring itself (each engine's own model load, planning, Python workers, JIT warm-up, writing,
the dataset's rename) is in rides/s. The CPU seconds of the scoring time are split by process (from /proc: the
driver's Python, Spark's Python workers, the JVM and its JIT compiler threads) to show where the cores went.
"""
from results import recorded  # bench/results.py
import argparse, ast, json, os, resource, subprocess, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get('TAXI_DATA_DIR') or ROOT.parent / 'shared' / 'data')
MONTHS = [DATA / f'green_tripdata_2021-0{m}.parquet' for m in (1, 2, 3)]


TICK = os.sysconf('SC_CLK_TCK')


def _stat(path: str) -> tuple:
    "(name, parent pid, CPU seconds) of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat."
    s = open(path).read()
    f = s[s.rindex(')') + 2:].split()
    return s[s.index('(') + 1:s.rindex(')')], int(f[1]), (int(f[11]) + int(f[12])) / TICK


def cpu_now() -> dict:
    "CPU seconds so far of our descendants: {'workers': Spark's Python processes, 'jvm': java, 'jit': its compilers}."
    procs = {}
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try: procs[int(pid)] = _stat(f'/proc/{pid}/stat')
            except (OSError, ValueError): pass
    mine, new = set(), {os.getpid()}
    while new:
        mine |= new
        new = {p for p, (_, pp, _) in procs.items() if pp in new and p not in mine}
    out = dict(workers=0.0, jvm=0.0, jit={})
    for p in mine - {os.getpid()}:
        name, _, sec = procs[p]
        if name == 'java':
            out['jvm'] += sec
            try:
                for tid in os.listdir(f'/proc/{p}/task'):
                    n, _, t = _stat(f'/proc/{p}/task/{tid}/stat')
                    if 'CompilerThre' in n: out['jit'][tid] = t  # per thread: C1 threads come and go
            except OSError: pass
        elif name.startswith('python'): out['workers'] += sec
    return out


def jvm_peak(stop: threading.Event, out: dict):
    """Sample the peak resident set (VmHWM, kB) of java processes descending from us until `stop` (cheaply: the
    kernel keeps the peak, so once our java child is found only its status file is read)."""
    me, java = os.getpid(), None
    while True:
        pids = [java] if java else [p for p in os.listdir('/proc') if p.isdigit()]
        for pid in pids:
            try:
                st = open(f'/proc/{pid}/status').read()
                if 'Name:\tjava' not in st or f'PPid:\t{me}\n' not in st:
                    if pid == java: java = None
                    continue
                java = pid
                out['jvm_kb'] = max(out.get('jvm_kb', 0), int(st.split('VmHWM:')[1].split()[0]))
            except (OSError, IndexError, ValueError):
                if pid == java: java = None
        if stop.wait(0.5 if java else 0.2): return


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(engine: str, master: str, n: int, model_uri: str, work: Path, settings=()) -> dict:
    "Run one configuration in this process; its figures."
    from taxi_duration import spark as S
    for kv in settings:  # LOCAL_JVM= (the JVM's defaults), DAEMON=pyspark.daemon, PIECE=100000
        k, v = kv.split('=', 1)
        assert hasattr(S, k), k
        try: v = ast.literal_eval(v)  # numbers, dicts; a name or '' stays a string
        except (ValueError, SyntaxError): pass
        setattr(S, k, v)
    srcs = [str(MONTHS[i % 3]) for i in range(n)]
    stop, jvm = threading.Event(), {}
    t = threading.Thread(target=jvm_peak, args=(stop, jvm), daemon=True); t.start()
    from taxi_duration.served import load_served
    t0, spark = time.perf_counter(), None
    load_served(model_uri)  # start-up for every engine: imports (mlflow, scikit-learn) and the model's local copy
    if engine == 'spark':
        from taxi_duration.spark import score_spark, spark_session
        spark = spark_session(master)
    start = time.perf_counter() - t0
    cpu0, own0 = cpu_now(), own_cpu()
    t0 = time.perf_counter()
    if engine == 'pandas':
        from taxi_duration import score
        rides = scored = 0
        for s in srcs:
            out, info = score.score_data(s, model_uri)
            rides += info.rows; scored += info.scored; del out
    else:
        out = work / f"out-{master.replace('[', '').replace(']', '')}-{n}"
        r = score_spark(srcs, out, model_uri, master, spark=spark)
        rides, scored = r['rows'], r['scored']
    seconds = time.perf_counter() - t0
    cpu1, own1 = cpu_now(), own_cpu()
    if spark is not None: spark.stop()
    stop.set(); t.join()
    cpu = {k: cpu1[k] - cpu0[k] for k in ('workers', 'jvm')}
    cpu['jit'] = sum(t - cpu0['jit'].get(tid, 0.0) for tid, t in cpu1['jit'].items())
    return dict(engine=engine, master=master if engine == 'spark' else '-', sources=n, rides=rides, scored=scored,
                seconds=seconds, start_s=start, rides_per_s=rides / seconds, cpu_driver=own1 - own0,
                **{f'cpu_{k}': v for k, v in cpu.items()},
                driver_python_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                driver_jvm_mb=jvm.get('jvm_kb', 0) / 1024)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sources', type=int, default=14, help='number of month files (2021-01..03 repeated)')
    p.add_argument('--model', default='gbm'); p.add_argument('--model_uri', default=None)
    p.add_argument('--one', nargs=3, metavar=('ENGINE', 'MASTER', 'N'), help=argparse.SUPPRESS)
    p.add_argument('--work', default=None, help=argparse.SUPPRESS)
    p.add_argument('--repeat', type=int, default=1,
                   help='run local[1] and local[2] this many times, alternating, and compare the best of each '
                        '(a shared machine only ever slows a run down)')
    p.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                   help="replace a setting of taxi_duration.spark for the Spark runs, to measure it: LOCAL_JVM= "
                        "(the JVM's defaults), DAEMON=pyspark.daemon (Spark's own daemon), PIECE=100000 (rides per task)")
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], int(a.one[2]), a.model_uri, Path(a.work), a.set))); return
    if not all(m.exists() for m in MONTHS): sys.exit(f'the real 2021 green months are not in {DATA}')
    work = Path(tempfile.mkdtemp(prefix='score-scale-'))
    os.environ.setdefault('MLFLOW_TRACKING_URI', f"sqlite:///{work / 'mlflow.db'}")
    for k, v in {'MLFLOW_DISABLE_TELEMETRY': 'true', 'DO_NOT_TRACK': 'true', 'WHYLOGS_NO_ANALYTICS': '1'}.items():
        os.environ.setdefault(k, v)
    model_uri = a.model_uri
    if not model_uri:
        from taxi_duration.pipeline import run_pipeline
        r = run_pipeline(str(MONTHS[0]), str(MONTHS[1]), model=a.model, log=lambda s: None)
        model_uri = f"models:/taxi-duration/{r.version}"
        print(f"model: {a.model}, {model_uri} (rmse {r.rmse:.4f})", flush=True)
    pairs = [('spark', f'local[{k}]', a.sources) for _ in range(a.repeat) for k in (1, 2)]
    runs = [('pandas', '-', a.sources)] + pairs + [('spark', 'local[2]', max(1, a.sources // 2))]
    print(f"load average before: {os.getloadavg()}; cores: {len(os.sched_getaffinity(0))}", flush=True)
    rows = []
    for engine, master, n in runs:
        cmd = [sys.executable, __file__, '--one', engine, master, str(n), '--model_uri', model_uri, '--work', str(work)]
        cmd += [f'--set={kv}' for kv in a.set]
        res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if res.returncode: sys.exit(f'{engine} {master} failed:\n{res.stderr[-3000:]}')
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{engine:<7}{r['master']:<10}{n:>3} sources {r['rides']:>10,} rides {r['seconds']:7.1f} s "
              f"{r['rides_per_s']:>9,.0f} rides/s  driver python {r['driver_python_mb']:6.0f} MB, "
              f"JVM {r['driver_jvm_mb']:6.0f} MB  (load {os.getloadavg()[0]:.2f})", flush=True)
        print(f"{'':20}start-up {r['start_s']:4.1f} s (not in rides/s); CPU s while scoring: driver "
              f"{r['cpu_driver']:.1f}, Python workers {r['cpu_workers']:.1f}, JVM {r['cpu_jvm']:.1f} "
              f"(JIT {r['cpu_jit']:.1f}); {r['scored']:,} rides predicted", flush=True)
    best = {m: max((r for r in rows[1:-1] if r['master'] == m), key=lambda r: r['rides_per_s'])
            for m in ('local[1]', 'local[2]')}
    s1, s2 = best['local[1]']['rides_per_s'], best['local[2]']['rides_per_s']
    w1, w2 = (best[m]['seconds'] + best[m]['start_s'] for m in ('local[1]', 'local[2]'))
    if a.repeat > 1: print(f"best of {a.repeat}: local[1] {s1:,.0f} rides/s, local[2] {s2:,.0f} rides/s")
    print(f"local[2] / local[1] = {s2 / s1:.2f}x (target >= 1.6; with the start-up counted: {w1 / w2:.2f}x); "
          f"local[2] / pandas = {s2 / rows[0]['rides_per_s']:.2f}x")
    half, full = rows[-1], rows[-2]
    print(f"driver peak with {half['sources']} vs {full['sources']} sources: python {half['driver_python_mb']:.0f} "
          f"vs {full['driver_python_mb']:.0f} MB, JVM {half['driver_jvm_mb']:.0f} vs {full['driver_jvm_mb']:.0f} MB")


if __name__ == '__main__':
    with recorded(skip='--one' in sys.argv):  # the output also goes to bench/RESULTS.md
        main()
