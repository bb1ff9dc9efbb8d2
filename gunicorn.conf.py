"""The service's production settings: gunicorn reads this file by itself when it starts in this folder.

    gunicorn app:app                  # what `make serve` runs; a command-line option overrides one setting here
    gunicorn -c gunicorn.conf.py app:app   # the same, from another folder: name the file

Why each setting: nbs/06_serve.ipynb, "Under gunicorn" and "Stopping without dropping a request".
"""
import os

bind = [f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or 9696}"]  # loopback unless HOST says otherwise
workers = 2                  # processes, each loading the model once
worker_class = 'taxi_duration.serve.GracefulThreadWorker'  # gthread: idle connections wait in a poller, not in a worker
threads = 64                 # requests each worker serves at once
timeout = 30                 # a worker silent this many seconds is replaced
graceful_timeout = 25        # on SIGTERM, requests under way and the last profile writes get this long (Kubernetes waits 30 s)
keepalive = 5                # an idle keep-alive connection is kept this many seconds
control_socket_disable = True  # gunicorn 26 would open one control socket per user, shared by every gunicorn of theirs


def on_starting(server):  # gunicorn's hook: the arbiter, before any worker starts
    """Halt once when every worker fails to load the app. gunicorn 26.2 stops the server at the first worker that
    exits with "App failed to load" (code 4), and raises again, out of its own shutdown, when a second one exits
    meanwhile: a traceback and exit code 1 instead of exit code 4 and our one line."""
    from gunicorn.errors import HaltServer
    stop = server.stop

    def stop_despite_more_failures(graceful=True):
        while True:
            try: return stop(graceful)
            except HaltServer: pass  # another worker could not load either: go on stopping the rest

    server.stop = stop_despite_more_failures
