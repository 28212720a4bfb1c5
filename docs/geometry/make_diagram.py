"""Draw docs/geometry/policies.png: how each geometry policy sizes photos of three shapes
for a model trained on the pairs (2:1 frames squeezed to 256x256).

    python docs/geometry/make_diagram.py

The sizes come from ``segdemo.geometry.plan`` itself. A wheel (a circle in the street) is
drawn as the model sees it: in training it is twice as high as wide.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse, Rectangle  # noqa: E402

from segdemo.geometry import TrainingFrames, plan  # noqa: E402

FRAMES = TrainingFrames.pairs((256, 256))
PHOTOS = {  # (height, width) of a camera photo with square pixels
    "training frame\n2048×1024 (2:1)": (1024, 2048),
    "4:3 photo\n1600×1200": (1200, 1600),
    "3.3:1 dashcam\n2640×800": (800, 2640),
}
POLICIES = ("squeeze", "aspect", "slide")
SCALE = 1 / 256  # one unit per 256 input pixels
WHEEL = 0.18  # the wheel's height in photo heights


def draw_input(ax, x0, y0, height, width, squeeze_x, windows=None, window=None):
    """An input of ``height x width`` pixels; the wheel squeezed horizontally by
    ``squeeze_x`` (scene width per input pixel over scene height per input pixel)."""
    h, w = height * SCALE, width * SCALE
    ax.add_patch(Rectangle((x0, y0), w, h, facecolor="#dfe7f2", edgecolor="#33415c", lw=1.2))
    ax.add_patch(Rectangle((x0, y0), w, h * 0.35, facecolor="#b9b9c9", edgecolor="none"))
    wheel_h = WHEEL * h
    ax.add_patch(
        Ellipse((x0 + w / 2, y0 + h * 0.35 + wheel_h / 2), wheel_h / squeeze_x, wheel_h,
                facecolor="#c0392b", edgecolor="black", lw=0.8)
    )  # fmt: skip
    for k, (wy, wx) in enumerate(windows or ()):
        colour = ("#e67e22", "#16a085", "#8e44ad", "#2c3e50")[k % 4]
        ax.add_patch(
            Rectangle((x0 + wx * SCALE + 0.02 * k, y0 + wy * SCALE + 0.02 * k),
                      window[1] * SCALE, window[0] * SCALE, fill=False, edgecolor=colour,
                      lw=1.8, ls="--")
        )  # fmt: skip


def main(out: Path) -> None:
    fig, axes = plt.subplots(len(PHOTOS), 1 + len(POLICIES), figsize=(12, 6.4))
    for row, (label, (height, width)) in enumerate(PHOTOS.items()):
        ax = axes[row][0]
        draw_input(ax, 0, 0, 256, 256 * width / height, 1.0)
        ax.set_title(label, fontsize=9)
        for col, policy in enumerate(POLICIES, start=1):
            p = plan((height, width), FRAMES, policy)
            run_h, run_w = p.run_size
            squeeze_x = (width / run_w) / (height / run_h)
            ax = axes[row][col]
            draw_input(ax, 0, 0, run_h, run_w, squeeze_x, p.windows, p.window)
            note = (
                "as trained"
                if abs(squeeze_x - 2) < 0.05
                else f"wheel {2 / squeeze_x:.2f}x as wide as trained"
            )
            ax.set_title(f"{policy}: {p.describe()}\n{note}", fontsize=9)
    for ax in axes.flat:
        ax.set_xlim(-0.05, 3.5)
        ax.set_ylim(-0.05, 1.1)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(
        "What the model sees under each geometry policy (a model trained on 2:1 frames squeezed "
        "to 256×256: a round wheel appears twice as high as wide)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main(Path(__file__).with_name("policies.png"))
