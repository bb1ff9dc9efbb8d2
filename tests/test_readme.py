"""The README's promises: every command it shows is exercised here or by a named test, its links resolve, its example
answer is what the service answers, and it says what is true now (no development history).

A command in a ```sh block, or an inline `code` span that starts like a command, is checked by its kind:
  make TARGET        the target exists and its recipe expands (`make -n`); the targets' work is tested elsewhere
  taxi-duration ...  the real CLI parser accepts exactly these options, and a test runs that subcommand
  curl .../predict   the same body, sent to the app, gets a 200 with the fields the README shows
  papermill ...      the notebook exists, its `parameters` cell defines each `-p` name, and a test runs papermill
  export VAR=...     the library reads VAR
  mlflow ui ...      MLflow's CLI accepts these options
  python bench/X.py  the script records its runs, and bench/RESULTS.md holds its last one (benchmarks are not run here)
  docker build|run   the Dockerfile builds what it is run with, and make test-image builds and runs that image
  gunicorn app:app   gunicorn.conf.py is beside app.py, and a test serves with exactly that command
Any other command fails the test until it gets a check here."""
import json, re, shlex, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
TEXT = README.read_text(encoding='utf-8')
TESTS = '\n'.join(p.read_text(encoding='utf-8') for p in (ROOT / 'tests').glob('test_*.py') if p.name != 'test_readme.py')
STARTS = ('make', 'taxi-duration', 'curl', 'papermill', 'export', 'python', '.venv/bin/', 'gunicorn', 'pip', 'mlflow')


def _blocks(lang='sh'):
    return re.findall(rf'^```{lang}\n(.*?)^```', TEXT, re.S | re.M)


def commands() -> list:
    "Every command the README shows: the lines of its sh blocks (continuations joined) and command-like inline code."
    found = []
    for block in _blocks():
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            if words: found.append(words)
    prose = re.sub(r'^```.*?^```', '', TEXT, flags=re.S | re.M)
    for span in re.findall(r'`([^`\n]+)`', prose):
        if span.split()[0].startswith(STARTS) and ' ' in span: found.append(shlex.split(span))
    return found


def _id(words): return ' '.join(words)[:60]


def _make(words):
    p = subprocess.run(['make', '-n', '-o', '.venv/.installed', *words[1:]], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def _cli(words):
    from taxi_duration.cli import parser
    try: args = parser(words[1:]).parse_args(words[1:])
    except SystemExit as e:  # 2: an option the CLI does not have; 0: --help
        assert e.code == 0, f'the CLI refuses `{" ".join(words)}`'
        return
    assert f"'{args.command}'" in TESTS, f'no test runs `taxi-duration {args.command}`'


def _curl(words, client):
    body = words[words.index('-d') + 1]
    url = next(w for w in words if '/predict' in w)
    r = client.post('/' + url.split('/', 1)[1], data=body, headers={'Content-Type': 'application/json'})
    assert r.status_code == 200, r.get_data(as_text=True)
    shown = json.loads(re.search(r'^```json\n(.*?)^```', TEXT, re.S | re.M).group(1))
    assert sorted(r.get_json()) == sorted(shown)


def _papermill(words):
    nb = ROOT / next(w for w in words if w.endswith('.ipynb'))
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    params = ''.join(''.join(c['source']) for c in cells if 'parameters' in c.get('metadata', {}).get('tags', []))
    names = [words[i + 1] for i, w in enumerate(words) if w == '-p']
    for n in names: assert re.search(rf'^{n}\s*=', params, re.M), f'{nb.name} has no parameter {n}'
    assert 'papermill' in TESTS


def _export(words):
    var = words[1].split('=')[0]
    lib = '\n'.join(p.read_text(encoding='utf-8') for p in (ROOT / 'taxi_duration').glob('*.py'))
    assert var in lib, f'the library never reads {var}'


def _mlflow(words):
    sub = words[1]
    p = subprocess.run([str(Path(sys.executable).parent / 'mlflow'), sub, '--help'], capture_output=True, text=True,
                       env={'MLFLOW_DISABLE_TELEMETRY': 'true', 'PATH': '/usr/bin:/bin'})
    assert p.returncode == 0, p.stderr
    for opt in (w.split('=')[0] for w in words[2:] if w.startswith('--')): assert opt in p.stdout


def _bench(words):
    script = ROOT / next(w for w in words if w.startswith('bench/'))
    src = script.read_text(encoding='utf-8')
    assert 'with recorded(' in src, f'{script.name} does not record its runs in bench/RESULTS.md'
    compile(src, str(script), 'exec')
    assert f'<!-- bench/{script.name} -->' in (ROOT / 'bench' / 'RESULTS.md').read_text(encoding='utf-8')


def _docker(words):
    assert words[1] in ('build', 'run'), f'docker {words[1]} is not what the README should show'
    assert (ROOT / 'Dockerfile').exists()
    image = (ROOT / 'tests' / 'test_image.py').read_text(encoding='utf-8')
    assert "'build'" in image, 'no test builds the Dockerfile'
    assert "'run'" in image, 'no test runs the image'
    env = [words[i + 1].split('=')[0] for i, w in enumerate(words) if w == '-e']
    for var in env: assert var in (ROOT / 'Dockerfile').read_text(encoding='utf-8') + _library(), var


def _gunicorn(words):
    assert words[1:] == ['app:app'], 'the README shows gunicorn with its settings in gunicorn.conf.py, no options'
    assert (ROOT / 'gunicorn.conf.py').exists()
    assert "'gunicorn'), 'app:app'" in TESTS, 'no test runs gunicorn app:app'


def _library() -> str:
    return '\n'.join(p.read_text(encoding='utf-8') for p in (ROOT / 'taxi_duration').glob('*.py'))


def check(words, client=None):
    "Check one command by its kind; fail for a kind nothing checks."
    head = words[0].removeprefix('.venv/bin/')
    if head == 'make': return _make(words)
    if head == 'taxi-duration': return _cli(words)
    if head == 'curl': return _curl(words, client)
    if head == 'papermill': return _papermill(words)
    if head == 'export': return _export(words)
    if head == 'mlflow': return _mlflow(words)
    if head == 'docker': return _docker(words)
    if head == 'gunicorn': return _gunicorn(words)
    if head == 'python' and words[1:2] and words[1].startswith('bench/'): return _bench(words)
    pytest.fail(f'nothing checks the README command `{" ".join(words)}`: add a check to tests/test_readme.py')


@pytest.mark.parametrize('words', [w for w in commands() if w[0] != 'curl'], ids=_id)
def test_command(words):
    check(words)


@pytest.mark.parametrize('words', [w for w in commands() if w[0] == 'curl'], ids=_id)
def test_curl_example_answers(words, champion_app):
    check(words, champion_app.test_client())


def test_example_answer_is_the_champions(champion_env, tmp_path):
    "The README's example answer, as JSON and in words, is what the champion of the pipeline on 2021-01/02 answers."
    from taxi_duration import serve, served
    words = next(w for w in commands() if w[0] == 'curl')
    app = serve.create_app(served.ServedModel(refresh_seconds=0, cache_dir=tmp_path))
    got = app.test_client().post('/predict', data=words[words.index('-d') + 1], content_type='application/json').json
    shown = json.loads(re.search(r'^```json\n(.*?)^```', TEXT, re.S | re.M).group(1))
    prose = ' '.join(TEXT.split())
    assert round(got['duration'], 2) == shown['duration']
    assert got['interval'] == shown['interval']
    assert f"about {round(got['duration'])} minutes" in prose
    assert f"{round(got['interval'][0])}–{round(got['interval'][1])}" in prose


def test_the_two_commands_are_there():
    cmds = [' '.join(w) for w in commands()]
    assert 'make run' in cmds
    assert 'make test' in cmds


def test_first_screen_shows_the_map_and_the_two_commands():
    first = TEXT.split('\n## ')[0]
    assert re.search(r'!\[[^\]]+\]\(nbs/images/map\.png\)', first)
    assert 'make run' in first
    assert 'make test' in first


def test_screenshot_is_taken_by_make_screenshot():
    p = subprocess.run(['make', '-n', '-o', '.venv/.installed', '-o', '.venv/.installed-test', 'screenshot'], cwd=ROOT,
                       capture_output=True, text=True)
    assert "map_screenshot('nbs/images/map.png')" in p.stdout, p.stderr


def test_screenshot_shows_the_answer(champion_app, tmp_path):
    "map_screenshot asks the README's ride on the map page (one headless chromium, ~3 s) and shows the service's answer."
    from browsers import need_chromium
    from taxi_duration.docs import map_screenshot
    need_chromium()
    shown = map_screenshot(tmp_path / 'map.png', app=champion_app)
    api = champion_app.test_client().post('/predict', json={
        'PULocationID': 43, 'DOLocationID': 181, 'pickup_datetime': '2021-03-05T08:30'}).json
    lo, hi = api['interval']
    assert shown == f"≈ {round(api['duration'])} min 80 % of rides: {round(lo)}–{round(hi)} min"
    assert (tmp_path / 'map.png').stat().st_size < 300_000


def test_screenshot_is_small():
    img = ROOT / 'nbs' / 'images' / 'map.png'
    assert img.stat().st_size < 300_000


def test_length_is_for_a_five_minute_read():
    assert 120 <= len(TEXT.splitlines()) <= 200


def test_relative_links_resolve():
    links = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', TEXT)
    broken = [l for l in links if not re.match(r'^[a-z]+://', l) and not (ROOT / l).exists()]
    assert broken == []


HISTORY = [
    r'\bround \d+|\bthis round\b|\bprevious round\b',  # development rounds
    r'\bbranch(es)?\b',                                 # branches
    r'\b[0-9a-f]{7,40}\b',                              # commit hashes
    r'\bissue #?\d+|#\d{1,4}\b',                        # issue numbers
    r'\b\d{1,2}:\d\d(\s*[–-]\s*\d{1,2}:\d\d)?\s*UTC\b',  # clock times of a measurement
    r'\b(before|after) (this|the) (change|merge)\b',    # before/after narration
]


@pytest.mark.parametrize('pattern', HISTORY)
def test_no_development_history(pattern):
    assert not re.search(pattern, TEXT, re.I), re.search(pattern, TEXT, re.I).group(0)


def test_quoted_validation_figures_are_the_recorded_ones():
    "The pipeline's validation figures the README quotes are those bench/models.py recorded (gbm, 2021-01 -> 2021-02)."
    quoted = re.search(r'`rmse ([\d.]+)\s+mae ([\d.]+)\s+r2 ([\d.]+)`', TEXT)
    section = (ROOT / 'bench' / 'RESULTS.md').read_text(encoding='utf-8').split('<!-- bench/models.py -->')[1]
    rows = [[v.strip() for v in l.strip('|').split('|')] for l in section.splitlines() if l.startswith('| ')]
    gbm = dict(zip(rows[0], next(r for r in rows if r[0] == 'gbm')))
    assert quoted.group(1) == gbm['2021-02 RMSE']
    assert quoted.group(2) == gbm['2021-02 MAE']
    assert quoted.group(3) == gbm['2021-02 R²']
