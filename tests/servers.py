"""The servers the tests start themselves (gunicorn, `python app.py`, the CLI's servers): a free loopback
port, waiting until one answers, and stopping it with every process it started."""
import os, signal, subprocess

from taxi_duration.tracking import free_port, wait_http  # the library's own: one idiom, not one per test file

__all__ = ['free_port', 'wait_http', 'start', 'stop']


def start(cmd: list, *, url: str|None=None, timeout: float=90, **popen) -> subprocess.Popen:
    """Start `cmd` in a process group of its own; with `url`, wait until it answers 200 there (or exits: an error).
    The caller stops it with `stop`."""
    p = subprocess.Popen(cmd, start_new_session=True, **popen)
    if url is not None:
        try: wait_http(url, timeout=timeout, proc=p)
        except BaseException:
            stop(p); raise
    return p


def stop(p: subprocess.Popen, sig: int=signal.SIGTERM, timeout: float=20) -> int:
    "Send `sig` to `p`'s process group, wait for it (SIGKILL after `timeout` s); its exit code."
    if p.poll() is None:
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: pass
        try: p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.wait()
    return p.returncode
