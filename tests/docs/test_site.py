"""The documentation site: it builds with warnings as errors, covers every module, and renders.

The build is the documented command (``sphinx-build -W -b html docs docs/_build/html``) into a
temporary folder. Three pages are then opened in headless Chromium (Debian's ``chromium``):
each is screenshotted, and every image and internal link of its rendered DOM must resolve (the
file exists, and so does the ``#anchor`` in it). Skipped, with the reason, without the ``docs``
extra or without Chromium.
"""

from __future__ import annotations

import html.parser
import os
import pathlib
import pkgutil
import shutil
import struct
import subprocess
import sys
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("index.html", "api/processes.html", "cli.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The built site (``index.html`` and the rest) in a temporary folder."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site") / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "-b", "html", str(DOCS), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=2400)
    assert done.returncode == 0, f"sphinx-build -W failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def test_the_site_builds_with_warnings_as_errors(site):
    for page in ("index.html", "install.html", "cli.html", "aiida.html", "queries.html", "benchmarks.html",
                 "api/processes.html", "api/adit_torch.html", "api/aiida_adit.html"):
        assert (site / page).is_file(), page
    processes = (site / "api/processes.html").read_text()
    # rendered from the specs: an input, an output and an exit code of each kind of process
    for text in ("AditTrainCalculation", "ERROR_OUT_OF_WALLTIME", "max_concurrent", "AditGenerateWorkChain"):
        assert text in processes, text
    cli = (site / "cli.html").read_text()
    for command in ("train-vae", "train-dit", "sample", "evaluate", "relax", "hull"):
        assert f"adit {command}" in cli, command


def test_every_module_is_in_the_api_reference():
    """A new module cannot be left out of the site: each one has its ``automodule`` line."""
    sys.path.insert(0, str(ROOT))
    for package in ("adit_torch", "aiida_adit"):
        page = (DOCS / "api" / f"{package}.md").read_text()
        listed = {line.split("::", 1)[1].strip() for line in page.splitlines() if line.startswith(".. automodule::")}
        found = {package} | {
            info.name
            for info in pkgutil.walk_packages([str(ROOT / package)], f"{package}.")
            if not info.name.rsplit(".", 1)[-1].startswith("_")
        }
        assert found - listed == set(), f"modules missing from docs/api/{package}.md"
        assert listed - found == set(), f"docs/api/{package}.md names modules that do not exist"


def _chromium() -> str | None:
    for name in (os.environ.get("ADIT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class _Refs(html.parser.HTMLParser):
    """``src`` of every ``img`` and ``href`` of every ``a`` and stylesheet ``link``; every ``id``."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "link" and attrs.get("rel") == "stylesheet" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(text: str) -> _Refs:
    refs = _Refs()
    refs.feed(text)
    return refs


@pytest.mark.parametrize("page", PAGES)
def test_pages_render_in_chromium_and_every_image_and_internal_link_resolves(site, page, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium (Debian: apt-get install chromium); set ADIT_CHROMIUM to another binary")
    url = (site / page).as_uri()
    shot = tmp_path / (page.replace("/", "_") + ".png")
    done = _headless(browser, f"--screenshot={shot}", "--window-size=1280,1600", url)
    assert shot.is_file(), done.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1280, 1600)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one

    dom = _headless(browser, "--dump-dom", url)
    assert dom.returncode == 0 and "<body" in dom.stdout, dom.stderr[-2000:]
    refs = _parse(dom.stdout)
    assert refs.links, "no links rendered"
    base = (site / page).parent
    broken = []
    for ref in refs.images + refs.links:
        parts = urllib.parse.urlsplit(ref)
        if parts.scheme in ("http", "https", "mailto") or parts.netloc:
            continue  # external: not checked here (no internet on the test machines)
        target = (base / urllib.parse.unquote(parts.path)).resolve() if parts.path else site / page
        if not target.is_file():
            broken.append(f"{ref} (no file {target})")
            continue
        if parts.fragment and target.suffix == ".html":
            ids = refs.ids if target == (site / page).resolve() else _parse(target.read_text()).ids
            if urllib.parse.unquote(parts.fragment) not in ids:
                broken.append(f"{ref} (no #{parts.fragment} in {target.name})")
    assert not broken, f"{page}: " + "; ".join(broken[:20])
