"""Wall time of the whole pipeline, papermill included, on the real 2021-01/02 green months.

    .venv/bin/python bench/pipeline.py            # or: make bench

Runs `taxi-duration pipeline` as a user would (a fresh process, a fresh SQLite store in a temp
folder) and prints the time of each step and the end-to-end total. Target: <= 60 s on 2 cores.
Data: $TAXI_DATA_DIR, else ../shared/data beside the checkout.
"""
from results import recorded  # bench/results.py
import os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
with recorded():  # the output also goes to bench/RESULTS.md
    data_dir = os.environ.get('TAXI_DATA_DIR') or str(ROOT.parent / 'shared' / 'data')
    if not (Path(data_dir) / 'green_tripdata_2021-01.parquet').exists():
        sys.exit(f'bench: the real months are not in {data_dir}; set TAXI_DATA_DIR')
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cli = Path(sys.executable).parent / 'taxi-duration'
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, MLFLOW_TRACKING_URI=f'sqlite:///{tmp}/mlflow.db', TAXI_DATA_DIR=data_dir)
            t0 = time.perf_counter()
            p = subprocess.run([str(cli), 'pipeline', '--train_data=green:2021-01', '--validation_data=green:2021-02'],
                               env=env, capture_output=True, text=True, cwd=tmp)
            total = time.perf_counter() - t0
            if p.returncode: sys.exit(f'bench: pipeline failed:\n{p.stderr}')
            steps = re.search(r'^steps:\s+(.*)$', p.stdout, re.M).group(1)
            rmse = re.search(r'rmse (\d+\.\d+)', p.stdout).group(1)
            print(f'run {i + 1}: end to end {total:.1f} s (target <= 60 s) | {steps} | validation rmse {rmse}')
