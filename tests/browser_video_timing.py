"""Time from uploading a 10-second street clip to a playable segmented video, in Chromium.

Not a test (pytest does not collect it): a measurement for docs/benchmarks.md. It starts
`streamlit run app.py` with the bundled checkpoints, uploads the synthetic drive clip
(10 s, 640x360, 10 frames/s, as `python -m segdemo bench --video` makes it) on the Segment
page's video input with the default models, and times each pass from the upload to the
moment the returned video's metadata has loaded. The first pass includes the server's
warm-up of each model's setting.

    python tests/browser_video_timing.py [--passes 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    choose_input,
    free_port,
    playable_video,
    wait_until_healthy,
)

from segdemo.video import drive_clip  # noqa: E402


def upload_and_wait(page, url: str, clip: Path) -> tuple[float, float, str]:
    """One pass: seconds from the upload to a playable video, its duration, its caption."""
    page.goto(url)
    choose_input(page, "Video")
    page.get_by_text("Street video (MP4, WebM)").wait_for()
    start = time.perf_counter()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(clip))
    page.get_by_text(clip.name).first.wait_for()
    page.get_by_role("button", name="Segment the video").click()
    video = playable_video(page)
    seconds = time.perf_counter() - start
    return (
        seconds,
        video.evaluate("v => v.duration"),
        page.get_by_text("frames at").first.inner_text(),
    )


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segdemo-video-timing-"))
    clip = drive_clip(tmp / "drive10.webm", seconds=10.0, fps=10, size=(360, 640))
    env = dict(os.environ, SEGDEMO_CHECKPOINTS=str(REPO / "checkpoints"),
               SEGDEMO_RUNS=str(tmp / "runs"))  # fmt: skip
    port = free_port()
    log = tmp / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.set_default_timeout(300_000)
            for n in range(args.passes):
                seconds, duration, caption = upload_and_wait(page, url, clip)
                print(f"pass {n + 1}: {seconds:.1f} s from upload to a playable "
                      f"{duration:.1f} s video ({caption})", flush=True)  # fmt: skip
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


if __name__ == "__main__":
    main()
