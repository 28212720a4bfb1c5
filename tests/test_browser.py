"""The real app in a real browser: `streamlit run app.py` driven by Playwright + Chromium.

Uploads a photo, waits for every model's mask, drags the before/after split and reads the
class under the pointer, switches the U-Net++ pruning level and times each switch (key
press -> new mask on screen) against the model's own inference time; uploads the
synthetic drive clip and plays the segmented video; takes a photo with Chromium's fake
camera. Screenshots go into pytest's tmp dir, and also into ``$SEGDEMO_SCREENSHOTS`` when
set (``SEGDEMO_SCREENSHOTS=docs/screenshots pytest -m browser`` refreshes the README's).
``$SEGDEMO_SCREENSHOT_PHOTO`` (a street photo) and ``$SEGDEMO_SCREENSHOT_TRUTH`` (its
colour mask) replace the synthetic scene in the Segment screenshots: a real street frame
shown as a result, the way papers show them (see docs/screenshots/README.md).

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
    # The camera test: a generated test pattern instead of a webcam, allowed without asking.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
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


@pytest.fixture(scope="module")
def checkpoint_folder(request) -> Path:
    """``$SEGDEMO_CHECKPOINTS``, else the tiny fixture checkpoints (a U-Net and a U-Net++)."""
    if "SEGDEMO_CHECKPOINTS" in os.environ:
        return Path(os.environ["SEGDEMO_CHECKPOINTS"])
    return request.getfixturevalue("tiny_checkpoints")["dir"]


@pytest.fixture(scope="module")
def server(checkpoint_folder, tmp_path_factory):
    """A `streamlit run app.py` subprocess on a free port, shared by this module's tests
    (each opens its own browser session); yields its URL."""
    tmp_path = tmp_path_factory.mktemp("server")
    env = dict(os.environ)
    env["SEGDEMO_CHECKPOINTS"] = str(checkpoint_folder)
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
            context = browser.new_context(viewport={"width": 1500, "height": 1000})
            context.grant_permissions(["camera"])
            page = context.new_page()
            page.set_default_timeout(SLOW)
            yield page
        finally:
            browser.close()


def street_photo(path: Path) -> Path:
    """A synthetic street scene as a JPEG, or ``$SEGDEMO_SCREENSHOT_PHOTO`` (the dataset
    itself is never shipped; a screenshot of the app's result on one of its frames is)."""
    from PIL import Image

    from segdemo.data import open_dataset

    if os.environ.get("SEGDEMO_SCREENSHOT_PHOTO"):
        source = Path(os.environ["SEGDEMO_SCREENSHOT_PHOTO"])
        path = path.with_suffix(source.suffix)
        shutil.copyfile(source, path)
        return path
    dataset = open_dataset("synthetic", "val", length=8, seed=7, native_size=(512, 1024))
    Image.fromarray(dataset.read_raw(5)[0]).save(path, quality=92)
    return path


def street_truths(folder: Path) -> dict[str, Path]:
    """The synthetic scene's ground truth as train ids and as official Cityscapes label ids
    (``*_gtFine_labelIds.png``), or ``$SEGDEMO_SCREENSHOT_TRUTH`` (a colour mask) alone."""
    import numpy as np
    from PIL import Image

    from segdemo.data import open_dataset
    from segdemo.labels import CITYSCAPES_LABELS

    if os.environ.get("SEGDEMO_SCREENSHOT_TRUTH"):
        return {"nearest label colours": Path(os.environ["SEGDEMO_SCREENSHOT_TRUTH"])}
    dataset = open_dataset("synthetic", "val", length=8, seed=7, native_size=(512, 1024))
    train_ids = dataset.read_raw(5)[1]
    to_label_id = np.zeros(256, np.uint8)  # unlabelled -> 0
    for label in CITYSCAPES_LABELS:
        if 0 <= label.train_id < 19 and label.id >= 0:
            to_label_id[label.train_id] = label.id
    paths = {"train ids": folder / "street_trainIds.png",
             "Cityscapes label ids": folder / "street_gtFine_labelIds.png"}  # fmt: skip
    Image.fromarray(train_ids).save(paths["train ids"])
    Image.fromarray(to_label_id[train_ids]).save(paths["Cityscapes label ids"])
    return paths


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


def save_element(locator, tmp_path: Path, name: str) -> Path:
    """A screenshot of one element (scrolled into view), saved like ``save_screenshot``."""
    path = tmp_path / name
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
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


def test_upload_masks_and_live_pruning_level(
    server, checkpoint_folder, browser_page, tmp_path, record_property
):
    page = browser_page
    page.set_viewport_size({"width": 1500, "height": 1900})  # controls, large view and grid
    elsewhere = []  # the app, its component included, fetches nothing from anywhere else
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else
            elsewhere.append(r.url))  # fmt: skip
    page.goto(server)
    page.get_by_text("Segment street photos").wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        str(street_photo(tmp_path / "street.jpg"))
    )
    size = r"\d+×\d+" if os.environ.get("SEGDEMO_SCREENSHOT_PHOTO") else "1024×512"
    page.get_by_text(re.compile(f"^photo · {size}$")).wait_for()
    # The photo, then one mask per selected checkpoint (two or more) with its warm
    # latency, and nothing stale.
    chosen = page.locator(".react-aria-ComboBox [data-tag]").count()
    assert chosen >= 2
    texts = wait_for_captions(page, rf"^photo · {size}(\n.+ · \d+ ms){{{chosen}}}$")
    # Each model is called by its checkpoint's file name, none twice.
    stems = {p.stem for p in checkpoint_folder.glob("*.safetensors")}
    names = [text.split(" · ")[0] for text in texts[1:]]
    assert set(names) <= stems and len(set(names)) == chosen, (names, stems)

    unetpp = [i for i, text in enumerate(texts) if re.search(r" · (fast|accurate) L", text)]
    assert unetpp, f"no U-Net++ among the selected checkpoints: {texts}"
    # Every checkpoint's tag is whole in the picker (none cut off).
    for tag in page.locator(".react-aria-ComboBox [data-tag]").all():
        assert tag.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), tag.inner_text()
    for button in page.get_by_role("button", name="Overlay PNG").all():
        assert button.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # label not cut
    assert_no_errors(page)

    # The large view: drag the split to a quarter of the width, read the class under the
    # pointer, highlight a class from the legend.
    stage = page.locator('[data-testid="before-after"]')
    # The masks are decoded in the page (the class under the pointer comes from them).
    page.wait_for_selector('[data-testid="before-after"][data-ready="true"]')
    handle = stage.locator(".sv-handle")
    assert handle.get_attribute("aria-valuenow") == "50"
    box = stage.bounding_box()
    middle_y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, middle_y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 4, middle_y, steps=8)
    page.mouse.up()
    assert abs(int(handle.get_attribute("aria-valuenow")) - 25) <= 1
    clip = stage.locator(".sv-left").evaluate("e => e.style.clipPath")
    assert clip.startswith("inset(0px 75") or clip.startswith("inset(0 75"), clip
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.9)
    readout = page.locator(".sv-readout")
    assert re.match(r"Under the pointer: .+: \w", readout.inner_text()), readout.inner_text()
    entry = page.locator(".sv-entry").first
    entry.hover()
    assert stage.locator(".sv-right canvas").evaluate("c => c.width") > 1  # the highlight
    entry.click()
    assert entry.get_attribute("aria-pressed") == "true"
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    save_screenshot(page, tmp_path, "segment.png")
    save_element(stage.locator(".."), tmp_path, "segment-large.png")
    entry.click()  # let the highlight go

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
        # The caption says "measuring…" until the setting's first warm run is timed.
        page.wait_for_function(
            """([index, level]) => {
                const c = document.querySelectorAll('[data-testid="stImageCaption"]')[index];
                const text = c ? c.innerText : "";
                return text.includes(` L${level} · `) && / · \\d+ ms$/.test(text);
            }""",
            arg=[unetpp[0], level],
            polling=200,
        )
        caption = captions(page)[unetpp[0]]
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
    # The large view shows the first model at its panel's setting, switched levels included.
    first_model = captions(page)[1].rsplit(" · ", 1)[0]
    page.wait_for_function(
        """(label) => [...document.querySelectorAll('*')].some(e => e.shadowRoot
            && e.shadowRoot.querySelector('.sv-right-label')
            && e.shadowRoot.querySelector('.sv-right-label').textContent === label + " ▶")""",
        arg=first_model,
        polling=500,
    )
    # The level diagram beside the slider lights exactly the nodes with i + j <= 1.
    column = page.locator('[data-testid="stColumn"]').filter(has=slider)
    diagram = column.locator("svg[role=img]").first
    lit = diagram.locator('[data-state="computed"]').evaluate_all(
        "nodes => nodes.map(n => n.dataset.node).sort()"
    )
    assert lit == ["0,0", "0,1", "1,0"], lit
    assert_no_errors(page)
    assert not elsewhere, elsewhere
    save_screenshot(page, tmp_path, "segment-level1.png")
    save_element(column.first, tmp_path, "segment-panel-level1.png")

    # Ground truth: official Cityscapes label ids are recognised, named and score exactly
    # as the same truth in train ids (read as train ids, they would score near zero).
    truth_input = page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1)
    scores = {}
    for encoding, path in reversed(street_truths(tmp_path).items()):  # label ids first
        truth_input.set_input_files(str(path))
        page.wait_for_function(
            """([encoding, chosen]) => {
                const texts = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
                    .map(e => e.innerText);
                const status = document.querySelector('[data-testid="stStatusWidget"]');
                return !(status && /Running/.test(status.innerText))
                    && texts.includes(`ground truth · ${encoding}`)
                    && texts.filter(t => t.startsWith("errors · mIoU ")).length === chosen;
            }""",
            arg=[encoding, chosen],
            polling=250,
            timeout=SLOW,
        )
        scores[encoding] = [t for t in captions(page) if t.startswith("errors · ")]
        assert_no_errors(page)
    assert len(set(map(tuple, scores.values()))) == 1, scores

    summary = {
        "switches": timings,
        "median_switch_ms": statistics.median(t["switch_ms"] for t in timings),
        "median_inference_ms": statistics.median(t["inference_ms"] for t in timings),
        "median_ratio": statistics.median(t["ratio"] for t in timings),
    }
    (tmp_path / "switch_timing.json").write_text(json.dumps(summary, indent=2))
    record_property("switch_timing", summary)
    print("switch timing:", json.dumps(summary))


def choose_input(page, name: str) -> None:
    page.get_by_text("Segment street photos").wait_for()
    page.locator('[data-testid="stRadio"]').filter(has_text="Input").get_by_text(
        name, exact=True
    ).click()


def playable_video(page):
    """The page's first video, once the browser has loaded its metadata (it can play)."""
    video = page.locator("video").first
    video.wait_for()
    video.evaluate(
        """v => new Promise((done, fail) => {
            if (v.readyState >= 1) return done();
            v.onloadedmetadata = () => done();
            v.onerror = () => fail(new Error("the video does not load"));
        })"""
    )
    return video


def test_video_upload_plays_back_segmented(server, browser_page, tmp_path, record_property):
    """The synthetic drive clip in, a segmented WebM out, played to its end in Chromium."""
    from segdemo.video import drive_clip

    page = browser_page
    page.set_viewport_size({"width": 1500, "height": 1400})
    clip = drive_clip(tmp_path / "drive.webm", seconds=2.0, fps=10, size=(256, 512))
    page.goto(server)
    choose_input(page, "Video")
    page.get_by_text("Street video (MP4, WebM)").wait_for()
    start = time.perf_counter()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(clip))
    page.get_by_text("drive.webm").first.wait_for()
    page.get_by_role("button", name="Segment the video").click()
    video = playable_video(page)
    upload_to_video_s = time.perf_counter() - start
    duration = video.evaluate("v => v.duration")
    assert abs(duration - 2.0) < 0.15, duration
    # Play it to the end and count the frames Chromium decoded.
    frames = video.evaluate(
        """v => new Promise((done, fail) => {
            v.muted = true;
            v.onended = () => done(v.getVideoPlaybackQuality().totalVideoFrames);
            v.onerror = () => fail(new Error("the video does not play"));
            v.play().catch(fail);
        })"""
    )
    assert frames == 20, frames
    from segdemo.video import grid_shape, tile_size

    width, height = video.evaluate("v => [v.videoWidth, v.videoHeight]")
    chosen = page.locator(".react-aria-ComboBox [data-tag]").count()
    # The photo and one mask per model in a grid of tiles, each at a watchable size.
    rows, columns = grid_shape(1 + chosen)
    tile_h, tile_w = tile_size((256, 512), columns)
    assert (width, height) == (columns * tile_w, rows * tile_h) and tile_h >= 256
    table = page.locator('[data-testid="stMarkdownContainer"] table').filter(has_text="frames/s")
    assert table.locator("tbody tr").count() == chosen
    assert_no_errors(page)
    record_property("upload_to_video_s", round(upload_to_video_s, 1))
    save_element(page.locator('[data-testid="stMain"]'), tmp_path, "segment-video.png")


def test_camera_photo_is_segmented(server, browser_page, tmp_path):
    """Chromium's fake camera (a test pattern) -> Take Photo -> every model's mask."""
    page = browser_page
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server)
    choose_input(page, "Camera")
    take = page.get_by_role("button", name=re.compile("Take photo", re.IGNORECASE))
    take.wait_for()
    page.wait_for_timeout(1500)  # the stream starts
    take.click()
    chosen = page.locator(".react-aria-ComboBox [data-tag]").count()
    texts = wait_for_captions(page, rf"^photo · \d+×\d+(\n.+ · \d+ ms){{{chosen}}}$")
    assert len(texts) == 1 + chosen >= 3
    assert_no_errors(page)
    page.screenshot(path=str(tmp_path / "segment-camera.png"))  # a test pattern: not for docs


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
    tradeoff = page.locator(".js-plotly-plot").filter(has_text="U-Net++ pruning: accuracy vs")
    tradeoff.scroll_into_view_if_needed(timeout=SLOW)
    page.wait_for_timeout(500)
    path = tmp_path / "compare-tradeoff.png"
    tradeoff.screenshot(path=str(path))
    if os.environ.get("SEGDEMO_SCREENSHOTS"):
        shutil.copyfile(path, Path(os.environ["SEGDEMO_SCREENSHOTS"]) / path.name)
