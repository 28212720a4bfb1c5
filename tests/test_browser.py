"""The real app in a real browser: `streamlit run app.py` driven by Playwright + Chromium.

Uploads a photo, waits for every model's mask, switches the U-Net++ pruning level and
times each switch (key press -> new mask on screen) against the model's own inference
time, and saves screenshots: into pytest's tmp dir, and also into ``$SEGDEMO_SCREENSHOTS``
when set (``SEGDEMO_SCREENSHOTS=docs/screenshots pytest -m browser`` refreshes the README's).

Checkpoints: ``$SEGDEMO_CHECKPOINTS`` if set, else the bundled ones in ``checkpoints/``,
else the tiny fixture checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SLOW = 180_000  # ms; the machine is shared with training runs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(request, tmp_path):
    """A `streamlit run app.py` subprocess on a free port; yields its URL."""
    env = dict(os.environ)
    if "SEGDEMO_CHECKPOINTS" not in env:  # a U-Net and a U-Net++, whatever is bundled
        env["SEGDEMO_CHECKPOINTS"] = str(request.getfixturevalue("tiny_checkpoints")["dir"])
    env.setdefault("SEGDEMO_RUNS", str(tmp_path / "runs"))
    port = free_port()
    log = tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(SLOW)
            yield page
        finally:
            browser.close()


def street_photo(path: Path) -> Path:
    """A synthetic street scene as a JPEG (no dataset photos: their licence forbids
    shipping them, and screenshots end up in docs/)."""
    from PIL import Image

    from segdemo.data import open_dataset

    dataset = open_dataset("synthetic", "val", length=8, seed=7, native_size=(512, 1024))
    Image.fromarray(dataset.read_raw(5)[0]).save(path, quality=92)
    return path


def captions(page) -> list[str]:
    return page.locator('[data-testid="stImageCaption"]').all_inner_texts()


def wait_for_captions(page, pattern: str) -> list[str]:
    """Wait until the image captions, one per line, match ``pattern`` (anchor it so that
    stale elements of the previous run, shown until the run ends, do not match)."""
    page.wait_for_function(
        """(pattern) => new RegExp(pattern).test(
            [...document.querySelectorAll('[data-testid="stImageCaption"]')]
                .map(e => e.innerText).join("\\n"))""",
        arg=pattern,
        polling="raf",
        timeout=SLOW,
    )
    return captions(page)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SEGDEMO_SCREENSHOTS"):
        folder = Path(os.environ["SEGDEMO_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    return path


def open_through_router(page, server: str, title: str):
    """Load the app, wait until app.py's router has run, then follow its link to ``title``.
    Returns the sidebar's user-content locator."""
    page.goto(server)
    sidebar = page.locator('[data-testid="stSidebarUserContent"]')
    sidebar.get_by_text("Inference").wait_for()
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    return sidebar


def assert_no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def test_upload_masks_and_live_pruning_level(server, browser_page, tmp_path, record_property):
    page = browser_page
    page.goto(server)
    page.get_by_text("Segment street photos").wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(street_photo(tmp_path / "street.jpg"))
    )
    page.get_by_text("photo · 1024×512").wait_for()
    # The photo, then one mask per selected checkpoint (two or more), and nothing stale.
    texts = wait_for_captions(page, r"^photo · 1024×512(\n.+ · \d+ ms){2,}$")
    chosen = page.locator(".react-aria-ComboBox [data-tag]").count()
    assert len(texts) == 1 + chosen, texts
    unetpp = [i for i, text in enumerate(texts) if re.search(r" · (fast|accurate) L", text)]
    assert unetpp, f"no U-Net++ among the selected checkpoints: {texts}"
    assert_no_errors(page)
    save_screenshot(page, tmp_path, "segment.png")

    # Switch L4 -> L3 -> L2 -> L1: each switch must re-run one inference, nothing else.
    # Timed from the key press to the new mask loaded in its <img>.
    slider = page.get_by_role("slider", name="Pruning level").first
    mask = page.locator('[data-testid="stImage"] img').nth(unetpp[0])
    first_src = mask.get_attribute("src")
    timings = []
    for level in (3, 2, 1):
        old_src = mask.get_attribute("src")
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            """([index, old]) => {
                const img = document.querySelectorAll('[data-testid="stImage"] img')[index];
                return img && img.getAttribute("src") !== old && img.complete
                    && img.naturalWidth > 0;
            }""",
            arg=[unetpp[0], old_src],
            polling="raf",
        )
        switch_ms = 1000 * (time.perf_counter() - start)
        caption = captions(page)[unetpp[0]]
        assert re.search(rf"(fast|accurate) L{level} · ", caption), caption
        inference_ms = float(re.search(r"(\d+) ms", caption).group(1))
        timings.append(
            {
                "level": level,
                "switch_ms": round(switch_ms),
                "inference_ms": inference_ms,
                "ratio": round(switch_ms / max(inference_ms, 1.0), 2),
            }
        )
        page.wait_for_timeout(2000)  # the panel finishes (cost table) before the next key
    assert mask.get_attribute("src") != first_src  # the mask on screen changed
    assert_no_errors(page)
    save_screenshot(page, tmp_path, "segment-level1.png")

    summary = {
        "switches": timings,
        "median_switch_ms": statistics.median(t["switch_ms"] for t in timings),
        "median_inference_ms": statistics.median(t["inference_ms"] for t in timings),
        "median_ratio": statistics.median(t["ratio"] for t in timings),
    }
    (tmp_path / "switch_timing.json").write_text(json.dumps(summary, indent=2))
    record_property("switch_timing", summary)
    print("switch timing:", json.dumps(summary))


def test_checkpoints_page_in_browser(server, browser_page, tmp_path):
    """The Checkpoints page, reached through the router's navigation."""
    page = browser_page
    sidebar = open_through_router(page, server, "Checkpoints")
    page.get_by_role("heading", name="Checkpoints").first.wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    sidebar.get_by_text("Inference").wait_for()  # common.sidebar(): still through app.py
    nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    assert [text.split()[-1] for text in nav] == [
        "Segment", "Compare", "Train", "Data", "Checkpoints",
    ]  # fmt: skip
    assert_no_errors(page)
    save_screenshot(page, tmp_path, "checkpoints.png")


def test_compare_page_in_browser(server, browser_page, tmp_path):
    """Compare evaluates two checkpoints and draws the per-class and trade-off charts."""
    page = browser_page
    open_through_router(page, server, "Compare")
    page.get_by_role("heading", name="Compare models").first.wait_for()
    page.get_by_role("button", name="Evaluate").first.click()
    page.get_by_role("heading", name="Results on").first.wait_for()
    # Per-class IoU, confusion matrix and, for the U-Net++, the pruning trade-off.
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=SLOW
    )
    page.wait_for_timeout(1500)  # let the last chart finish drawing
    assert_no_errors(page)
    save_screenshot(page, tmp_path, "compare.png")
    # The charts sit below the fold of Streamlit's scrolling main area: shoot them directly.
    tradeoff = page.locator(".js-plotly-plot").last
    tradeoff.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    path = tmp_path / "compare-tradeoff.png"
    tradeoff.screenshot(path=str(path))
    if os.environ.get("SEGDEMO_SCREENSHOTS"):
        shutil.copyfile(path, Path(os.environ["SEGDEMO_SCREENSHOTS"]) / path.name)
