"""The servers the tests start themselves (gunicorn, `python app.py`, the CLI's servers, PostgreSQL): a free loopback
port, waiting until one answers (or until anything else a test waits for holds), and stopping it with every process
it started."""
import os, random, signal, socket, subprocess, time

from taxi_duration.tracking import wait_http  # the library's own wait: one idiom, not one per test file

__all__ = ['free_port', 'accepts', 'wait_http', 'wait_until', 'start', 'stop']


def _ephemeral_range() -> tuple:
    "The ports the kernel hands out for port-0 binds and outgoing connections (Linux; its default elsewhere)."
    try: lo, hi = map(int, open('/proc/sys/net/ipv4/ip_local_port_range').read().split())
    except (OSError, ValueError): lo, hi = 32768, 60999
    return lo, hi


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server started next. Drawn at random *below* the kernel's ephemeral
    range: the kernel's own port-0 choice would be handed to the next outgoing connection of any process on the
    machine (eight sessions share it), and the server's bind then fails; random, so tests choosing at once
    rarely pick the same one; bound once here to check nobody holds it."""
    lo, hi = _ephemeral_range()
    first, last = (max(1024, lo - 12000), lo - 1) if lo > 2048 else (hi + 1, 65535)
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randint(first, last)
        with socket.socket() as s:
            try: s.bind(('127.0.0.1', port))
            except OSError: continue  # in use (or in TIME_WAIT): draw another
            return port
    raise OSError(f'no free TCP port on 127.0.0.1 between {first} and {last}')


def accepts(port: int, host: str='127.0.0.1') -> bool:
    "Whether a TCP connection to `host`:`port` gets through now (something listens there)."
    try: socket.create_connection((host, port), timeout=1).close()
    except OSError: return False
    return True


def wait_until(holds, what: str, *, timeout: float=60, proc: subprocess.Popen|None=None, detail=None,
               every: float=0.1):
    """Call `holds()` every `every` s until it returns something true, and return that. Fails (AssertionError) saying
    it waited `timeout` s for `what`, or that `proc` exited first; `detail()` (a server's log, the last status, …)
    ends the message."""
    def give_up(why: str): raise AssertionError(why + (f'\n{detail()}' if detail else ''))
    deadline = time.monotonic() + timeout
    while not (got := holds()):
        if proc is not None and proc.poll() is not None:
            give_up(f'the process exited with code {proc.returncode} while waiting for {what}')
        if time.monotonic() > deadline: give_up(f'waited {timeout:g} s for {what}')
        time.sleep(every)
    return got


def start(cmd: list, *, url: str|None=None, timeout: float=90, **popen) -> subprocess.Popen:
    """Start `cmd` in a process group of its own; with `url`, wait until it answers 200 there (or exits: an error).
    The caller stops it with `stop`."""
    p = subprocess.Popen(cmd, start_new_session=True, **popen)
    if url is not None:
        try: wait_http(url, timeout=timeout, proc=p)
        except BaseException:
            stop(p); raise
    return p


def stop(p: subprocess.Popen, sig: int=signal.SIGTERM, timeout: float=40) -> int:
    "Send `sig` to `p`'s process group, wait for it (SIGKILL after `timeout` s); its exit code."
    if p.poll() is None:
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: pass
        try: p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.wait()
    return p.returncode
