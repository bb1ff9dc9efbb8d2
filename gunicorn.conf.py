"""The service's production settings: gunicorn reads this file by itself when it starts in this folder.

    gunicorn app:app                  # what `make serve` runs; a command-line option overrides one setting here
    gunicorn -c gunicorn.conf.py app:app   # the same, from another folder: name the file

Why each setting: nbs/06_serve.ipynb, "Under gunicorn" and "Stopping without dropping a request".
"""
import os

bind = [f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or 9696}"]  # loopback unless HOST says otherwise
preload_app = True           # load the model once, in the master, BEFORE the port opens: no client waits on a loading
                             # model, half the start-up CPU of loading it in each worker, and a replaced worker is ready at
                             # once; what each process runs for itself starts after the fork (post_worker_init, below)
workers = 2                  # processes, forked from the master once the model is loaded (shared copy-on-write)
worker_class = 'taxi_duration.serve.GracefulThreadWorker'  # gthread: idle connections wait in a poller, not in a worker
threads = 64                 # requests each worker serves at once
timeout = 30                 # a worker silent this many seconds is replaced
graceful_timeout = 25        # on SIGTERM, requests under way and the last profile writes get this long (Kubernetes waits 30 s)
keepalive = 5                # an idle keep-alive connection is kept this many seconds
control_socket_disable = True  # gunicorn 26 would open one control socket per user, shared by every gunicorn of theirs


def post_worker_init(worker):  # gunicorn's hook: in each worker, with the app, before it accepts
    """Start the worker's own threads and child (the alias refresh, the live profiler): the master loaded the app, and
    a thread or child process started there would not be the worker's."""
    from taxi_duration.serve import start_in_this_process
    start_in_this_process(worker.wsgi)
