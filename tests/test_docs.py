"""The documentation site (`make docs` = `python -m taxi_duration.docs`): built offline, one page per notebook in
reading order with the navigation, nbdev's directives respected, signatures and docstrings, the outputs of the
notebooks it ran (figures, tables), internal links that resolve, and nothing loaded from another host — in a real
headless chromium too.

The site is built once for the module. To keep the suite's time small it runs only the notebooks in `EXECUTED`
(cheap ones whose pages carry a figure, a table, the screenshot and plots: the zone map, a feature's distribution);
every other page is rendered from the notebook and the exported module without running it. `make docs` runs them all:
that is the same code path, notebook by notebook."""
import html.parser, json, os, re, subprocess, sys, threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browsers import chromium
from conftest import DATA_DIR
from test_readme import HISTORY
from taxi_duration.docs import notebooks, page_name

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
# cheap to run, and between them a figure, a table, the screenshot and plots on their pages (the index's reading-order
# table; 01a_zones's map, an SVG the browser tests look at; 08_profiles's distributions, drawn by matplotlib and embedded
# as PNG images); 03_train's and 09_verdicts's plots are the same code path, run by `make docs`
EXECUTED = {'index.ipynb': ('table', 'screenshot'), '01a_zones.ipynb': ('figure',), '08_profiles.ipynb': ('plot',),
            '90_docs.ipynb': ()}  # the builder run as a notebook by itself, in its own process (argv names docs.py)
SHOWS = {'figure': r'<img src="data:image/(png|jpeg);base64,|<svg', 'table': r'<table', 'screenshot': r'<img src="images/map\.png"',
         'plot': r'<img src="data:image/png;base64,'}


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site, built once by the command `make docs` runs, offline; (folder, the command's output)."
    dest = tmp_path_factory.mktemp('site') / '_docs'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', MLFLOW_DISABLE_TELEMETRY='true', DO_NOT_TRACK='true',
               WHYLOGS_NO_ANALYTICS='1', TAXI_TLC_BASE_URL='http://127.0.0.1:9/unreachable',
               http_proxy='http://127.0.0.1:9', https_proxy='http://127.0.0.1:9', no_proxy='')
    env.setdefault('TAXI_DATA_DIR', str(DATA_DIR))  # where the tests find the real months (the zone shapes too)
    p = subprocess.run([sys.executable, '-m', 'taxi_duration.docs', '--nbs', str(NBS), '--dest', str(dest),
                        '--execute', ','.join(EXECUTED), '--workers', '2'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return dest, p.stdout


class _Refs(html.parser.HTMLParser):
    "Every URL a page refers to, with the tag and attribute it is in; the ids it defines."
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == 'id' and v: self.ids.add(v)
            if k in ('href', 'src', 'data', 'poster', 'srcset') and v: self.refs.append((tag, k, v))


def _refs(page: Path) -> _Refs:
    r = _Refs()
    r.feed(page.read_text(encoding='utf-8'))
    return r


def _pages(dest): return sorted(dest.glob('*.html'))


def test_every_notebook_has_a_page(site):
    dest, _ = site
    missing = [nb.name for nb in notebooks(NBS) if not (dest / page_name(nb)).exists()]
    assert missing == []


def test_no_page_without_a_notebook(site):
    dest, _ = site
    assert sorted(p.name for p in _pages(dest)) == sorted(page_name(nb) for nb in notebooks(NBS))


def test_the_build_says_what_it_ran(site):
    _, out = site
    assert re.search(r'^index\.ipynb\s+executed', out, re.MULTILINE)


def test_navigation_lists_every_page_in_reading_order(site):
    dest, _ = site
    want = [page_name(nb) for nb in notebooks(NBS)]
    for page in _pages(dest):
        nav = page.read_text(encoding='utf-8').split('</nav>')[0]
        links = re.findall(r'<li><a href="([^"]+)"', nav)
        assert links == want, page.name


def test_index_comes_first_and_is_the_front_page(site):
    dest, _ = site
    assert notebooks(NBS)[0].name == 'index.ipynb'
    assert 'images/map.png' in (dest / 'index.html').read_text(encoding='utf-8')


@pytest.mark.parametrize('nb,shows', sorted(EXECUTED.items()))
def test_run_pages_show_their_outputs(site, nb, shows, request):
    if nb != 'index.ipynb': request.getfixturevalue('real_months')  # these run where the months (and zone shapes) are
    dest, _ = site
    text = (dest / page_name(nb)).read_text(encoding='utf-8')
    for what in shows:
        assert re.search(SHOWS[what], text), f'{nb}: no {what}'


def test_run_pages_show_no_errors(site):
    "No run page shows an error: the elements, not the words (90_docs's own code prints them as text)."
    dest, _ = site
    for nb in EXECUTED:
        page = (dest / page_name(nb)).read_text(encoding='utf-8')
        assert '<pre class="out error">' not in page, nb
        assert '<div class="banner error">' not in page, nb


def test_exported_names_have_their_signature_and_docstring(site):
    "Every public name a notebook exports is documented on its page (show_doc), run or not."
    import importlib
    from nbdev.processors import _default_exp
    from execnb.nbio import read_nb
    dest, _ = site
    checked = 0
    for nb in notebooks(NBS):
        mod = _default_exp(read_nb(nb))
        if not mod: continue
        module = importlib.import_module(f'taxi_duration.{mod}')
        text = (dest / page_name(nb)).read_text(encoding='utf-8')
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if not callable(obj) or getattr(obj, '__module__', None) != module.__name__: continue
            assert re.search(rf'<h[34][^>]*>{re.escape(name)}\s*(<a class="anchor-link"|</h[34]>)', text), f'{nb.name}: no show_doc for {name}'
            checked += 1
    assert checked > 20


def _plain(markup: str) -> str:
    "What a reader sees of some HTML: the tags dropped, the entities decoded."
    return html.unescape(re.sub(r'<[^>]+>', '', markup))


def test_directives_are_not_shown(site):
    "No `#| ...` line in the code shown, and no `nbdev_export()` cell (prose may name the directives)."
    dest, _ = site
    for page in _pages(dest):
        code = re.findall(r'<div class="highlight"><pre>(.*?)</pre>', page.read_text(encoding='utf-8'), re.S)
        text = _plain('\n'.join(code))
        assert code, page.name
        assert not re.search(r'^\s*#\|', text, re.M), page.name
        assert 'nbdev_export()' not in text, page.name


def test_hidden_cells_are_left_out(site):
    "The code of `#| hide` cells is not on the pages (checked on lines that appear nowhere else in their notebook)."
    from execnb.nbio import read_nb
    dest, _ = site
    checked = 0
    for nb in notebooks(NBS):
        cells = [c for c in read_nb(nb).cells if c.cell_type == 'code']
        hidden = [c.source for c in cells if re.match(r'#\|\s*hide\s*$', c.source.splitlines()[0] if c.source else '')]
        shown = '\n'.join(c.source for c in cells if c.source not in hidden)
        text = _plain((dest / page_name(nb)).read_text(encoding='utf-8'))
        for src in hidden:
            for line in (l.strip() for l in src.splitlines()[1:]):
                if len(line) > 30 and line not in shown:
                    assert line not in text, f'{nb.name}: {line}'
                    checked += 1
    assert checked > 10


def test_not_run_cells_are_shown_and_marked(site):
    "A `#| eval: false` cell is on the page, marked as not run."
    from execnb.nbio import read_nb
    dest, _ = site
    for nb in notebooks(NBS):
        cells = read_nb(nb).cells
        if any(c.cell_type == 'code' and re.search(r'^#\|\s*eval:\s*false', c.source, re.M) for c in cells):
            assert 'not run by the tests' in (dest / page_name(nb)).read_text(encoding='utf-8'), nb.name
            return
    pytest.skip('no notebook has an `eval: false` cell')


def test_internal_links_resolve(site):
    dest, _ = site
    broken = []
    for page in _pages(dest):
        for tag, attr, url in _refs(page).refs:
            if re.match(r'^([a-z]+:|//|#)', url): continue
            path, _, anchor = url.partition('#')
            target = (page.parent / path).resolve()
            if not target.exists(): broken.append(f'{page.name}: {url}')
            elif anchor and target.suffix == '.html' and anchor not in _refs(target).ids: broken.append(f'{page.name}: {url}')
    assert broken == []


LOADED = {'script', 'link', 'img', 'iframe', 'source', 'video', 'audio', 'object', 'embed', 'image', 'use', 'input'}


def test_nothing_is_loaded_from_another_host(site):
    "No script, stylesheet, font, image or frame from another host (a link a reader clicks is fine)."
    dest, _ = site
    outside = []
    for page in _pages(dest):
        for tag, attr, url in _refs(page).refs:
            if tag in LOADED and re.match(r'^(https?:)?//', url): outside.append(f'{page.name}: <{tag} {attr}={url}>')
    for css in dest.rglob('*.css'):
        text = css.read_text(encoding='utf-8')
        outside += [f'{css.name}: {u}' for u in re.findall(r'(?:url\(|@import)\s*["\']?((?:https?:)?//[^"\')\s]+)', text)]
    assert outside == []


def test_pages_carry_no_history(site):
    "Pages say what is true now: no commit hashes or 'round' narration in the rendered text."
    dest, _ = site
    for page in _pages(dest):
        text = re.sub(r'<[^>]+>', ' ', page.read_text(encoding='utf-8').split('<main>')[1])
        text = re.sub(r'data:[^ ]+', ' ', text)
        assert not re.search(r'\bround \d+\b', text, re.I), page.name


NOTEBOOK_HISTORY = [p for p in HISTORY if 'UTC' not in p] + [  # a schedule's '06:00 UTC' is not history
    r'\b\d{1,2}:\d\d\s*[–-]\s*\d{1,2}:\d\d\s*UTC\b',                             # when a measurement ran
    r'\bno longer\b|\bany more\b|\b(at|before) (that|this) commit\b|\bprevious version\b',  # then-and-now narration
]


@pytest.mark.parametrize('pattern', NOTEBOOK_HISTORY)
def test_notebooks_carry_no_history(pattern):
    "The notebooks' prose says what is true now, as the README's does: history lives in git."
    found = [f'{nb.name}: {m.group(0)}' for nb in sorted(NBS.glob('*.ipynb'))
             for cell in json.loads(nb.read_text(encoding='utf-8'))['cells'] if cell['cell_type'] == 'markdown'
             for m in re.finditer(pattern, ''.join(cell['source']), re.I)]
    assert found == []

# ---- in a real browser ----



@pytest.fixture(scope='module')
def served(site):
    "The site on a loopback port (a plain static file server); its URL."
    dest, _ = site
    srv = ThreadingHTTPServer(('127.0.0.1', 0), partial(_Quiet, directory=str(dest)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope='module')
def browser():
    with chromium(1200, 900) as driver: yield driver


def _resources(d) -> list:
    return d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


@pytest.mark.parametrize('nb', sorted(EXECUTED))
def test_browser_loads_only_the_site(served, browser, nb):
    d = browser
    d.get(f'{served}/{page_name(nb)}')
    assert d.execute_script('return document.readyState') == 'complete'
    foreign = [u for u in _resources(d) if not (u.startswith(served + '/') or u.startswith('data:'))]
    assert foreign == []


def test_browser_draws_the_zone_map(served, browser, real_months):
    "The zones page shows the map its notebook drew from the TLC's zone shapes (they come with the real months)."
    from selenium.webdriver.common.by import By
    browser.get(f'{served}/01a_zones.html')
    zone_map = browser.find_element(By.CSS_SELECTOR, '.out.image svg')
    assert zone_map.size['width'] > 300


def test_browser_renders_styles_images_and_navigation(served, browser):
    from selenium.webdriver.common.by import By
    d = browser
    d.get(f'{served}/01a_zones.html')
    assert d.execute_script("return getComputedStyle(document.querySelector('nav.sidebar')).position") == 'sticky'
    d.find_element(By.CSS_SELECTOR, 'nav.sidebar a[href="index.html"]').click()
    assert d.current_url == f'{served}/index.html'
    assert d.execute_script("return document.querySelector('main img').naturalWidth") > 0  # the screenshot of the map
