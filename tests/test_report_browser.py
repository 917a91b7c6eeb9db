"""The HTML report in a real browser: headless Chromium, no selenium / playwright.

The page's own script (``ncscope.report.html._CHECK_JS``) sets ``<body data-images-ok="N/M">``
on ``load`` (N of the M ``<img>`` decoded). Chromium runs with ``--dump-dom`` (the DOM after
scripts ran, ``--virtual-time-budget`` lets ``load`` fire) and ``--enable-logging=stderr``, so
the page's console messages and uncaught exceptions appear on stderr as ``...:CONSOLE:<line>]``
lines. Chromium logs *every* console message at INFO level (``console.error`` included), so
the check counts any CONSOLE line as a failure -- the report page never logs anything -- plus
any ``Uncaught`` line. The checker is itself tested on broken pages.

Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from _report_fixtures import write_run_folder
from ncscope.report.build import build_report
from ncscope.report.html import _CHECK_JS

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0",
)
TIMEOUT_S = 120
_CONSOLE = re.compile(r"CONSOLE[:(]|Uncaught")
_IMAGES_OK = re.compile(r"<body\b[^>]*\bdata-images-ok=\"(\d+)/(\d+)\"")


def _binary() -> str:
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which(
        "chromium")
    if path is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return _binary()


def _run(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as e:  # pragma: no cover - a hung browser
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(cmd)} ({e})")


def load_page(chromium: str, page: Path, tmp: Path) -> tuple[str, str]:
    """(DOM after the page's scripts ran, Chromium's stderr)."""
    proc = _run(chromium, tmp, "--dump-dom", page.resolve().as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def page_problems(dom: str, stderr: str) -> list[str]:
    """Everything wrong with a loaded page: undecoded images, console messages, exceptions."""
    problems = []
    m = _IMAGES_OK.search(dom)
    n_img = len(re.findall(r"<img\b", dom))
    if m is None:
        problems.append("no data-images-ok attribute on <body> (the load check did not run)")
    else:
        ok, total = int(m.group(1)), int(m.group(2))
        if total == 0 or ok != total or total != n_img:
            problems.append(f"images decoded: data-images-ok={ok}/{total}, <img> in DOM: {n_img}")
    problems += [f"console: {line.strip()}" for line in stderr.splitlines()
                 if _CONSOLE.search(line)]
    return problems


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return build_report(write_run_folder(tmp_path_factory.mktemp("browser") / "rq").parent)


def test_report_loads_without_errors_and_every_image_decodes(chromium, report, tmp_path) -> None:
    dom, stderr = load_page(chromium, report, tmp_path)
    assert page_problems(dom, stderr) == []
    ok = _IMAGES_OK.search(dom)
    assert ok is not None and int(ok.group(2)) == len(re.findall(r"<img\b", dom)) >= 4
    assert "Claims, judged from this run" in dom


def test_report_screenshot(chromium, report, tmp_path) -> None:
    shot = tmp_path / "shot.png"
    proc = _run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
                report.resolve().as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 2400)
    assert len(data) > 50_000
    import matplotlib.image as mpimg

    px = mpimg.imread(io.BytesIO(data), format="png")[..., :3]
    ink = (px.mean(axis=2) < 0.9).mean()  # share of non-white pixels: text, tables, plots
    assert 0.02 < ink < 0.9, ink


# ---------------------------------------------------------------------------------------------
# The checker catches broken pages (and passes a healthy one).

def _tiny_png() -> bytes:
    """A valid 2x2 RGB PNG (built here, so its CRCs are right by construction)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    raw = b"".join(b"\x00" + b"\x10\x80\xf0" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_PIXEL = base64.b64encode(_tiny_png()).decode()


def _page(tmp: Path, body: str, *, check: bool = True) -> Path:
    head = f"<script>{_CHECK_JS}</script>" if check else ""
    p = tmp / "page.html"
    p.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head>"
                 f"<body>{body}</body></html>", encoding="utf-8")
    return p


GOOD_IMG = f'<img alt="ok" src="data:image/png;base64,{_PIXEL}">'


@pytest.mark.parametrize("body,check,expect", [
    (GOOD_IMG, True, None),
    (GOOD_IMG + '<img alt="bad" src="data:image/png;base64,AAAA">', True, "data-images-ok=1/2"),
    (GOOD_IMG + '<img alt="gone" src="missing.png">', True, "data-images-ok=1/2"),
    ("<p>no images</p>", True, "data-images-ok=0/0"),
    (GOOD_IMG + "<script>throw new Error('x')</script>", True, "Uncaught Error: x"),
    (GOOD_IMG + "<script>console.error('boom')</script>", True, '"boom"'),
    (GOOD_IMG, False, "no data-images-ok"),
], ids=["healthy", "undecodable-png", "missing-file", "no-images", "exception",
        "console-error", "no-check-script"])
def test_checker_catches_broken_pages(chromium, tmp_path, body, check, expect) -> None:
    dom, stderr = load_page(chromium, _page(tmp_path, body, check=check), tmp_path)
    problems = page_problems(dom, stderr)
    if expect is None:
        assert problems == []
    else:
        assert any(expect in p for p in problems), problems
