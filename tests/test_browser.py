"""The rendered smoke book in a real headless Chromium: every page of the table of contents
loads without console errors, its figures load, glued numbers and citations resolve, search
finds the chapters, no code or table runs off the column at 1280 px, and no visible code cell
shows glue bookkeeping. Screenshots of every page are saved for reviewers."""
import functools
import http.server
import shutil
import threading
from urllib.parse import urlparse

import pytest
import yaml

from lib.book import paths

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def toc_pages():
    toc = yaml.safe_load((paths.ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [e["file"] for part in toc["parts"] for e in part["chapters"]]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(smoke_book):
    """Serve the rendered book on localhost for the length of this module."""
    handler = functools.partial(QuietHandler,
                                directory=str(smoke_book.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium where "
                    "it may; install it to run the browser test)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, headless=True,
                                          args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class PageVisit:
    """Open one page with off-host requests blocked; record what went wrong."""

    def __init__(self, browser, site):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.blocked = [], []
        host = urlparse(site).netloc
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.route("**/*", functools.partial(self._route, host))

    def _route(self, host, route):
        # The book must work offline: off-host requests are blocked and listed (the page
        # tests require that there are none).
        url = route.request.url
        if urlparse(url).netloc == host:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def _console(self, message):
        if message.type == "error" and not any(url in message.text for url in self.blocked) \
                and "net::ERR_FAILED" not in message.text:
            self.errors.append(message.text)

    def open(self, url):
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        return self.page


def test_every_toc_page_loads_cleanly_with_its_figures(browser, site):
    for page_name in toc_pages():
        visit = PageVisit(browser, site)
        page = visit.open(f"{site}/{page_name}.html")
        assert page.locator("h1").count() >= 1, page_name
        broken = page.evaluate("""() => Array.from(document.images)
            .filter(img => !(img.complete && img.naturalWidth > 0))
            .map(img => img.src)""")
        assert broken == [], f"{page_name}: images that did not load: {broken}"
        if page_name.startswith("notebooks/"):
            text = page.inner_text("body")
            assert "glue key" not in text and "{glue:" not in text, page_name
        assert visit.errors == [], f"{page_name}: console errors {visit.errors}"
        assert visit.blocked == [], f"{page_name}: requests off this host {visit.blocked}"
        page.close()


def test_equations_are_typeset_offline(browser, site):
    # MathJax ships with the book: with every off-host request blocked, the displayed
    # equations of the Sobol' method chapter still become typeset math, not LaTeX source.
    visit = PageVisit(browser, site)
    page = visit.open(f"{site}/notebooks/02-sobol-method.html")
    page.wait_for_selector("mjx-container", timeout=20000)
    typeset = page.locator("div.math mjx-container, mjx-container[display='true']").count()
    assert typeset >= 3, f"only {typeset} displayed equations typeset"
    assert "\\frac" not in page.inner_text("article"), "LaTeX source left on the page"
    assert visit.blocked == [] and visit.errors == [], (visit.blocked, visit.errors)
    page.close()


def test_chapter_figures_are_real_images(browser, site):
    figures = 0
    for page_name in toc_pages():
        visit = PageVisit(browser, site)
        page = visit.open(f"{site}/{page_name}.html")
        sizes = page.evaluate("""() => Array.from(document.querySelectorAll('figure img, .cell_output img'))
            .map(img => [img.naturalWidth, img.naturalHeight])""")
        assert all(w > 10 and h > 10 for w, h in sizes), (page_name, sizes)
        figures += len(sizes)
        page.close()
    assert figures > 0, "the book shows no figures at all"


def test_citations_resolve_to_the_bibliography(browser, site):
    visit = PageVisit(browser, site)
    page = visit.open(f"{site}/book/bibliography.html")
    entries = page.locator(".citation, div.citation, dl.citation > dt").count()
    assert entries >= 5
    page = visit.open(f"{site}/notebooks/00-reproduction-map.html")
    links = page.eval_on_selector_all("a[href*='bibliography.html#']", "els => els.map(e => e.href)")
    assert links, "the reproduction map cites the paper"
    bibliography = visit.open(links[0])
    anchor = urlparse(links[0]).fragment
    assert bibliography.locator(f"[id='{anchor}']").count() == 1


def test_search_finds_a_chapter(browser, site):
    visit = PageVisit(browser, site)
    page = visit.open(f"{site}/search.html?q=Sobol")
    page.wait_for_selector("ul.search li a", timeout=20000)
    hits = page.eval_on_selector_all("ul.search li a", "els => els.map(e => e.href)")
    assert any("/notebooks/" in hit for hit in hits), hits


# At a 1280 x 800 window, what is wider than its box: code blocks (named by their longest
# line) and output tables; collapsed (hidden) cells have no width and are not counted.
OVERFLOWING = """() => {
    const found = [];
    for (const pre of document.querySelectorAll('article pre')) {
        if (pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1) {
            const longest = pre.innerText.split('\\n')
                .reduce((a, b) => (b.length > a.length ? b : a), '');
            found.push('code: ' + longest.trim());
        }
    }
    for (const table of document.querySelectorAll('article table')) {
        const box = table.parentElement;
        if (box.clientWidth > 0 && table.getBoundingClientRect().width > box.clientWidth + 1) {
            const head = table.querySelector('th, td');
            found.push('table: ' + (head ? head.innerText.trim() : ''));
        }
    }
    return found;
}"""

VISIBLE_GLUE = """() => Array.from(document.querySelectorAll('article div.cell'))
    .filter(cell => !cell.classList.contains('tag_hide-input')
                    && !cell.classList.contains('tag_remove-input'))
    .map(cell => cell.querySelector('div.cell_input'))
    .filter(input => input && input.innerText.includes('glue('))
    .map(input => input.innerText.split('\\n').find(line => line.includes('glue(')))"""


def test_no_code_or_table_runs_off_the_column(browser, site):
    problems = {}
    for page_name in toc_pages():
        visit = PageVisit(browser, site)
        visit.page.set_viewport_size({"width": 1280, "height": 800})
        page = visit.open(f"{site}/{page_name}.html")
        found = page.evaluate(OVERFLOWING)
        if found:
            problems[page_name] = f"{len(found)}, first: {found[0][:120]}"
        page.close()
    assert not problems, f"scrolls sideways at 1280 px: {problems}"


def test_no_visible_code_cell_shows_glue_bookkeeping(browser, site):
    problems = {}
    for page_name in [p for p in toc_pages() if p.startswith("notebooks/")]:
        visit = PageVisit(browser, site)
        page = visit.open(f"{site}/{page_name}.html")
        found = page.evaluate(VISIBLE_GLUE)
        if found:
            problems[page_name] = f"{len(found)} cells, first: {found[0].strip()[:100]}"
        page.close()
    assert not problems, f"visible glue calls: {problems}"


def test_screenshots_of_every_page_at_1280_px(browser, site):
    shots = paths.ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for page_name in toc_pages():
        visit = PageVisit(browser, site)
        visit.page.set_viewport_size({"width": 1280, "height": 800})
        page = visit.open(f"{site}/{page_name}.html")
        target = shots / f"{page_name.replace('/', '-')}.png"
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000, page_name
        page.close()


def test_launch_buttons_open_the_chapters_notebooks(browser, site):
    for page_name in [p for p in toc_pages() if p.startswith("notebooks/")]:
        visit = PageVisit(browser, site)
        page = visit.open(f"{site}/{page_name}.html")
        links = page.eval_on_selector_all(
            "a[href*='colab.research.google.com'], a[href*='mybinder.org']",
            "els => els.map(e => e.href)")
        assert len(links) == 2, (page_name, links)
        for link in links:
            target = link.split("urlpath=tree/")[-1] if "mybinder" in link else link
            assert target.endswith(f"{page_name}.ipynb"), link
        assert (paths.ROOT / f"{page_name}.ipynb").is_file(), page_name
        page.close()
