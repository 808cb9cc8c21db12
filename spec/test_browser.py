"""The written page in a real browser (Debian's headless Chromium through chromedriver and selenium):
formulas are laid out as MathML, the search box filters claims, a claim's line link lands on its line.

The page is built from the real registry's GAN, VAE and CNN claims with made-up passing results (no
verify run), and the real notes when they are there, else a stand-in with the claims' statements on
their lines. CI installs the browser (Debian packages ``chromium chromium-driver fonts-lmodern``);
without it this test fails, with a message, unless ``MP_NO_BROWSER=1`` says to leave it out.
Tooling test: no claim markers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from spec import report
from spec.ledger import build_ledger
from spec.registry import REQUIRED_ROLES, load_registry

ROOT = Path(__file__).resolve().parent.parent
REAL_NOTES = ROOT.parent / "shared" / "notes" / "machine-perception-summary.tex"
CHAPTERS = ("gan", "vae", "cnn")
TARGET = "gan.js-divergence"


def _chromium() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chrome and driver:
        return chrome, driver
    if os.environ.get("MP_NO_BROWSER") == "1":
        pytest.skip("MP_NO_BROWSER=1: the browser check of the HTML ledger is left out")
    pytest.fail("headless Chromium is needed for the HTML ledger's browser test: install the Debian packages "
                "chromium, chromium-driver and fonts-lmodern (apt-get install chromium chromium-driver "
                "fonts-lmodern), or set MP_NO_BROWSER=1 to leave the test out", pytrace=False)


def _page(tmp_path: Path) -> tuple[Path, dict]:
    claims = {k: c for k, c in load_registry(ROOT / "spec" / "claims").items() if c.chapter in CHAPTERS}
    assert TARGET in claims
    if REAL_NOTES.is_file():
        notes = REAL_NOTES
    else:  # a stand-in: each claim's statement on its first line, so the page has lines to link to
        last = max(max(c.line_numbers()) for c in claims.values())
        lines = [""] * (last + 2)
        lines[0], lines[1], lines[-1] = "\\begin{document}", "\\section{Stand-in}", "\\end{document}"
        for c in claims.values():
            lines[min(c.line_numbers()) - 1] = c.statement.replace("%", "\\%")
        notes = tmp_path / "notes.tex"
        notes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = {f"t.py::test_{cid}_{r}": {"outcome": "passed", "seconds": 0.01, "props": {"claims": [[cid, r]]}}
               for cid, c in claims.items() for r in REQUIRED_ROLES[c.verdict]}
    ledger = build_ledger(claims, results, notes, environment_info={"python": "3", "torch": "t", "device": "cpu",
                                                                     "dtype": "float64"})
    report.write_reports(ledger, tmp_path / "out", notes)
    return tmp_path / "out" / "index.html", ledger


@pytest.fixture(scope="module")
def browser():
    chrome, driver = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def test_ledger_page_in_headless_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from selenium.webdriver.support.ui import WebDriverWait

    page, ledger = _page(tmp_path)
    browser.get(page.as_uri())
    js = browser.execute_script
    # A loaded machine (CI under xdist) can hand back control before layout settles: wait for the
    # claim's rendered formula before measuring it, and fail with a message if it never appears.
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("var c=document.getElementById(arguments[0]);"
                                   "return !!(c && c.querySelector('mfrac') && c.querySelector('mi'))", TARGET),
        message=f"{TARGET}: no rendered <mfrac> in the page after 20 s")

    # 1. Math is laid out as MathML: boxes of non-zero size, a fraction taller than a plain variable.
    maths = browser.find_elements(By.CSS_SELECTOR, f'[id="{TARGET}"] math')
    assert maths, "the claim's notes source has no <math>"
    sizes = js("return Array.from(arguments[0]).map(function(m){var r=m.getBoundingClientRect();"
               "return [r.width, r.height]})", maths)
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    frac, ident = js("var c=document.getElementById(arguments[0]);"
                     "return [c.querySelector('mfrac').getBoundingClientRect().height,"
                     " c.querySelector('mi').getBoundingClientRect().height]", TARGET)
    assert frac > 1.5 * ident, (frac, ident)  # stacked numerator over denominator, not inline text

    # 2. Searching "Jensen" keeps the JS-divergence claim and hides unrelated ones.
    box = browser.find_element(By.ID, "search")
    box.send_keys("Jensen")
    target = browser.find_element(By.ID, TARGET)
    assert target.is_displayed()
    unrelated = [c["id"] for c in ledger["claims"] if "jensen" not in report._search_text(c)]
    assert len(unrelated) > 20
    shown = js("return arguments[0].filter(function(i){var e=document.getElementById(i)||"
               "document.getElementById('row-'+i); return e && e.offsetParent !== null})", unrelated)
    assert shown == []
    js("document.getElementById('search').value=''; document.getElementById('search').dispatchEvent(new Event('input'))")
    assert browser.find_element(By.ID, unrelated[0]).is_displayed() or \
        browser.find_element(By.ID, "row-" + unrelated[0]).is_displayed()

    # 3. The claim's first line link lands on that line of the notes view, opening its section.
    first = report.line_runs(next(c for c in ledger["claims"] if c["id"] == TARGET)["lines"])[0][0]
    link = target.find_element(By.CSS_SELECTOR, f'a[href="#L{first}"]')
    link.click()
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return location.hash === arguments[0] && !!document.getElementById(arguments[1])", f"#L{first}", f"L{first}"),
        message=f"the link to line {first} did not land")
    state = js("var l=document.getElementById(arguments[0]), r=l.getBoundingClientRect();"
               "return [location.hash, l.matches(':target'), l.closest('details').open, r.top, r.bottom,"
               " window.innerHeight, l.querySelector('.ln').textContent,"
               " Array.from(l.querySelectorAll('.by a')).map(function(a){return a.textContent})]", f"L{first}")
    hash_, is_target, is_open, top, bottom, height, number, back = state
    assert (hash_, is_target, is_open, number) == (f"#L{first}", True, True, str(first))
    assert -1 <= top and bottom <= height + 1, (top, bottom, height)  # in view (sub-pixel layout)
    assert TARGET in back  # and the line links back to its claim

    # 4. No horizontal scrolling of the page at a phone's width (formulas scroll inside their box).
    browser.set_window_size(500, 900)  # Chromium's smallest window; narrow enough for the mobile layout
    over = js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert over <= 0, over
