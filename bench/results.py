"""bench/RESULTS.md, the one place benchmark figures live: each bench script records its last complete run there.

    from results import recorded
    with recorded():          # around the script's work: what it prints is also kept
        main()

When the body finishes without an error, the script's section of RESULTS.md (between its two markers) is replaced
by what it printed, with the date, the machine, the load average before and after, and the command. A run that fails
or is interrupted leaves the file as it was. Scripts run themselves as helpers (`--one`) pass `skip=True`."""
import contextlib, datetime, io, os, platform, re, shlex, sys
from pathlib import Path

RESULTS = Path(__file__).with_name('RESULTS.md')
ROOT = Path(__file__).resolve().parent.parent
HEADER = ('# Benchmark results\n\nWritten by the bench scripts (`bench/*.py`): each run replaces its own section with what '
          'it printed. Do not edit by hand; run the command shown instead. The machines are shared, so each script '
          'compares what it measures within one run and prints the load average.\n')


class _Tee(io.TextIOBase):
    def __init__(self, out): self.out, self.buf = out, io.StringIO()
    def write(self, s): self.out.write(s); self.buf.write(s); return len(s)
    def flush(self): self.out.flush()


def machine() -> str:
    "CPU model, cores, memory and Python of this machine, in one line."
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor() or 'unknown CPU') if Path('/proc/cpuinfo').exists() else platform.processor()
    mem = ''
    if Path('/proc/meminfo').exists():
        kb = int(Path('/proc/meminfo').read_text().split()[1])
        mem = f', {kb / 2**20:.0f} GiB'
    return f'{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}'


def command() -> str:
    "The command that ran this script, from the repository's root."
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(['.venv/bin/python', str(script), *sys.argv[1:]])


def section(name: str, printed: str, load_before, load_after, when=None) -> str:
    "The text of one script's section."
    when = when or datetime.datetime.now(datetime.timezone.utc)
    fmt = lambda l: ' / '.join(f'{x:.1f}' for x in l)
    return (f'<!-- {name} -->\n## {name}\n\n'
            f'- date: {when:%Y-%m-%d %H:%M} UTC\n- machine: {machine()}\n'
            f'- load average (1 / 5 / 15 min): {fmt(load_before)} before, {fmt(load_after)} after\n'
            f'- command: `{command()}`\n\n```\n{printed.rstrip()}\n```\n<!-- end {name} -->\n')


def write_section(name: str, text: str, path: Path = RESULTS):
    "Replace (or add) the section `name` of `path`, atomically; sections stay in name order."
    old = path.read_text(encoding='utf-8') if path.exists() else HEADER
    parts = {m.group(1): m.group(0) for m in re.finditer(r'<!-- (\S+) -->\n.*?<!-- end \1 -->\n', old, re.S)}
    head = re.split(r'<!-- \S+ -->\n', old, maxsplit=1)[0].rstrip('\n') + '\n'
    parts[name] = text
    tmp = path.with_suffix('.tmp')
    tmp.write_text(head + ''.join('\n' + parts[k] for k in sorted(parts)), encoding='utf-8')
    os.replace(tmp, path)


@contextlib.contextmanager
def recorded(skip: bool = False):
    "Keep what the body prints; on success, record it in RESULTS.md under this script's name."
    if skip:
        yield; return
    name = 'bench/' + Path(sys.argv[0]).name
    before, tee, out = os.getloadavg(), _Tee(sys.stdout), sys.stdout
    sys.stdout = tee
    try: yield
    finally: sys.stdout = out
    write_section(name, section(name, tee.buf.getvalue(), before, os.getloadavg()))
    print(f'recorded in {RESULTS.relative_to(ROOT)}')
