"""Serve the champion over HTTP: the shell around `taxi_duration.serve` (nbs/06_serve.ipynb).

    python app.py                              # http://127.0.0.1:9696 (HOST / PORT override)
    gunicorn app:app                           # production: the settings in gunicorn.conf.py (what `make serve` runs)

Serves `models:/taxi-duration@champion` from MLFLOW_TRACKING_URI (MODEL_URI overrides) and
follows the alias every REFRESH_SECONDS (default 30). The model is loaded before the port opens
(under gunicorn: once, in the master, then the workers are forked). With no champion and no last
good local copy it exits at once, saying why in one line.
Every answered ride is profiled with whylogs into $MONITORING_DIR (default ./monitoring), off
the request path, in a child process of each serving process (nbs/11_live.ipynb); MONITORING=0
turns that off. /health shows how it is doing.
"""
import os

from taxi_duration.live import LiveProfiler
from taxi_duration.serve import app_or_exit, or_exit, run_or_exit, served_from_env

served = or_exit(served_from_env)  # the model first: with nothing to serve, one line and exit before monitoring starts
profiler = (None if os.environ.get('MONITORING') == '0' else  # an unwritable folder: one line
            or_exit(LiveProfiler, separate_process=True, start_now=False))  # started in each serving process
app = app_or_exit(served, on_predictions=profiler and profiler.record,  # the WSGI object
                  on_rejected=profiler and profiler.rejected, on_health=profiler and profiler.status,
                  on_start=profiler and profiler.start)

if __name__ == '__main__':
    run_or_exit(app)
