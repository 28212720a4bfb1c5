"""The Checkpoints page in a real browser, with files whose metadata carries Markdown and
links: the page shows their text and no link or image from them (AppTest only sees the
Markdown source, not what the browser makes of it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from checkpoint_cases import CASES, tiny_parts, write
from test_browser import (  # noqa: F401 (browser_page is a fixture)
    CHROMIUM,
    REPO,
    browser_page,
    free_port,
    open_through_router,
    wait_until_healthy,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed"),
]

URL = "http://example.com/x.png"
CREATED = f"![x]({URL}) [click](http://example.com) <img src={URL}> www.example.com"


@pytest.fixture
def store(tmp_path):
    """Only a broken upload (its class names are Markdown) until the test adds a good one."""
    bundled, uploaded = tmp_path / "bundled", tmp_path / "runs" / "uploaded"
    bundled.mkdir()
    uploaded.mkdir(parents=True)
    make = {name: make for name, make, _ in CASES}["class_name_with_markup"]
    make(uploaded)
    return {"bundled": bundled, "runs": tmp_path / "runs", "uploaded": uploaded}


@pytest.fixture
def store_server(store, tmp_path):
    """`streamlit run app.py` on ``store``'s folders; yields its URL."""
    env = dict(
        os.environ, SEGDEMO_CHECKPOINTS=str(store["bundled"]), SEGDEMO_RUNS=str(store["runs"])
    )
    port, log = free_port(), tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
        "--server.port", str(port), "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"  # .streamlit/config.toml: 127.0.0.1 only
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        process.kill()
        process.wait(timeout=30)


def links_and_images(page) -> list[str]:
    return page.locator('a[href*="example.com"], img[src*="example.com"]').evaluate_all(
        "els => els.map(e => e.outerHTML)"
    )


def test_metadata_and_errors_render_as_text(store_server, browser_page, store):  # noqa: F811
    page = browser_page
    open_through_router(page, store_server, "Checkpoints")
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for()
    text = error.inner_text().replace("\u2060", "")
    assert "label_set.names[0] should be 1 to 64 letters" in text and URL in text
    assert links_and_images(page) == []

    # A good checkpoint whose creation date is Markdown: its details are plain text.
    tensors, meta = tiny_parts()
    write(store["bundled"] / "unet.safetensors", dict(meta, created=CREATED), tensors)
    open_through_router(page, store_server, "Checkpoints")
    page.get_by_text(f"created: {CREATED}").first.wait_for()
    assert links_and_images(page) == []
