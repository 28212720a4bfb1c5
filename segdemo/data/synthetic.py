"""A procedural street-scene generator with exact masks: segdemo's offline dataset.

Each scene is a one-point-perspective street: sky, a canyon of building facades with
windows (or tree lines, or open fields), sidewalks and grass verges, a road with lane
markings, then poles with traffic signs and lights, trees, walls and fences, cars, trucks,
buses, pedestrians and cyclists, sorted far to near. Colours are drawn per object from wide
ranges that overlap between classes (grey road, grey facades, grey cars, overcast sky), and
the whole frame gets a lighting mode, a colour cast, low-frequency shading, shadows and
sensor noise, so a model has to use shape and context rather than one colour per class.

Masks are rendered in official Cityscapes label ids (no anti-aliasing, so they are exact)
and mapped to any label set with :meth:`LabelSet.from_label_ids`. A scene depends only on
``(seed, split, index)`` and is drawn directly at the requested size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Official Cityscapes label ids used by the renderer.
ROAD, SIDEWALK, BUILDING, WALL, FENCE = 7, 8, 11, 12, 13
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 17, 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 24, 25, 26, 27, 28, 33

SPLIT_CODES = {"train": 0, "val": 1}
DEFAULT_LENGTHS = {"train": 512, "val": 64}
DEFAULT_SIZE = (128, 256)
DEFAULT_SEED = 0
#: Bump when the renderer changes, so dataset fingerprints change with it.
GENERATOR_VERSION = 1

_CAR_COLORS = [
    (235, 235, 235), (30, 30, 32), (160, 162, 165), (110, 112, 115), (150, 20, 25),
    (25, 45, 120), (20, 70, 40), (200, 180, 60), (90, 60, 40), (60, 90, 150),
]  # fmt: skip


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of scene ``index`` of ``split`` (independent of every other)."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _jitter(rng: np.random.Generator, color, amount: float) -> tuple[int, int, int]:
    c = np.asarray(color, dtype=np.float64) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v * factor))) for v in color)


class _Scene:
    """Draws the photo and the label-id mask together, with a simple ground projection.

    A ground point has a lateral coordinate ``xb`` (its image x on the bottom row) and a
    depth ``z >= 1`` (1 = the bottom row); it projects towards the vanishing point.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng, self.h, self.w = rng, height, width
        self.image = Image.new("RGB", (width, height))
        self.mask = Image.new("L", (width, height), SKY)
        self.draw_image = ImageDraw.Draw(self.image)
        self.draw_mask = ImageDraw.Draw(self.mask)
        self.horizon = height * rng.uniform(0.33, 0.5)
        self.vx = width * rng.uniform(0.35, 0.65)

    # -- projection --------------------------------------------------------------------------
    def project(self, xb: float, z: float) -> tuple[float, float]:
        return self.vx + (xb - self.vx) / z, self.horizon + (self.h - self.horizon) / z

    def px(self, size_at_bottom: float, z: float) -> float:
        """Pixel size at depth ``z`` of something ``size_at_bottom`` pixels tall at z=1."""
        return size_at_bottom / z

    # -- primitives ----------------------------------------------------------------------------
    def polygon(self, points, color, label: int | None) -> None:
        points = [(float(x), float(y)) for x, y in points]
        self.draw_image.polygon(points, fill=tuple(color))
        if label is not None:
            self.draw_mask.polygon(points, fill=label)

    def rect(self, x0, y0, x1, y1, color, label: int | None) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, label)

    def ellipse(self, cx, cy, rx, ry, color, label: int | None) -> None:
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if box[2] - box[0] < 0.5 or box[3] - box[1] < 0.5:
            return
        self.draw_image.ellipse(box, fill=tuple(color))
        if label is not None:
            self.draw_mask.ellipse(box, fill=label)

    def line(self, points, color, width: float, label: int | None) -> None:
        points = [(float(x), float(y)) for x, y in points]
        w = max(1, int(round(width)))
        self.draw_image.line(points, fill=tuple(color), width=w)
        if label is not None:
            self.draw_mask.line(points, fill=label, width=w)


def _sky(scene: _Scene, mode: str) -> np.ndarray:
    rng, h, w = scene.rng, scene.h, scene.w
    top, bottom = {
        "day": ((60, 120, 200), (170, 200, 230)),
        "overcast": ((170, 172, 178), (205, 205, 208)),
        "dusk": ((60, 70, 130), (240, 150, 90)),
        "dark": ((20, 25, 45), (70, 70, 90)),
    }[mode]
    top, bottom = _jitter(rng, top, 15), _jitter(rng, bottom, 15)
    t = np.clip(np.arange(h, dtype=np.float32) / max(scene.horizon, 1.0), 0, 1)[:, None, None]
    sky = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    sky = np.broadcast_to(sky, (h, w, 3)).astype(np.uint8)
    scene.image.paste(Image.fromarray(np.ascontiguousarray(sky)))
    for _ in range(rng.integers(0, 4)):  # clouds are sky too
        cx, cy = rng.uniform(0, w), rng.uniform(0, scene.horizon * 0.8)
        shade = _jitter(rng, (225, 225, 230), 12)
        for _ in range(3):
            scene.ellipse(
                cx + rng.normal(0, w * 0.04),
                cy + rng.normal(0, h * 0.02),
                w * rng.uniform(0.03, 0.08),
                h * rng.uniform(0.02, 0.05),
                shade,
                SKY,
            )
    return sky


def _ground(scene: _Scene, layout: dict) -> None:
    rng, h = scene.rng, scene.h
    v = (scene.vx, scene.horizon)
    road = _jitter(rng, rng.choice([85, 100, 115, 130]) * np.ones(3), 10)
    scene.polygon([v, (layout["road_l"], h), (layout["road_r"], h)], road, ROAD)
    # Asphalt patches and tyre tracks: road with a different tone.
    for _ in range(rng.integers(0, 3)):
        xb = rng.uniform(layout["road_l"], layout["road_r"])
        z0, z1 = sorted(rng.uniform(1.0, 6.0, 2))
        half = rng.uniform(8, 40)
        pts = [
            scene.project(xb - half, z0),
            scene.project(xb + half, z0),
            scene.project(xb + half, z1),
            scene.project(xb - half, z1),
        ]
        scene.polygon(pts, _shade(road, rng.uniform(0.8, 1.15)), ROAD)
    for side in ("l", "r"):
        sign = -1 if side == "l" else 1
        edge = layout[f"road_{side}"]
        walk = layout[f"walk_{side}"]
        verge = layout[f"verge_{side}"]
        base = rng.choice([(150, 150, 150), (175, 165, 150), (160, 110, 100), (120, 120, 125)])
        walk_color = _jitter(rng, base, 12)
        scene.polygon([v, (edge, h), (edge + sign * walk, h)], walk_color, SIDEWALK)
        # Curb: a thin lighter band, still sidewalk.
        scene.polygon(
            [v, (edge, h), (edge + sign * walk * 0.06, h)], _shade(walk_color, 1.2), SIDEWALK
        )
        if verge > 0:
            grass = _jitter(rng, rng.choice([(90, 140, 60), (120, 150, 70), (140, 130, 80)]), 15)
            outer = edge + sign * (walk + verge)
            scene.polygon([v, (edge + sign * walk, h), (outer, h)], grass, TERRAIN)


def _lane_markings(scene: _Scene, layout: dict) -> None:
    rng = scene.rng
    paint = _jitter(rng, (230, 230, 220) if rng.random() < 0.8 else (225, 190, 60), 10)
    road_l, road_r = layout["road_l"], layout["road_r"]
    lanes = int(rng.integers(2, 4))
    dash_len, gap = rng.uniform(0.15, 0.5), rng.uniform(0.2, 0.6)
    for k in range(1, lanes):
        xb = road_l + (road_r - road_l) * k / lanes
        half = scene.w * 0.006
        z = 1.0
        while z < 30:
            z1 = z + dash_len * z
            pts = [
                scene.project(xb - half, z),
                scene.project(xb + half, z),
                scene.project(xb + half, z1),
                scene.project(xb - half, z1),
            ]
            scene.polygon(pts, paint, ROAD)
            z = z1 + gap * z1
    if rng.random() < 0.6:  # solid edge lines
        for xb in (road_l + scene.w * 0.02, road_r - scene.w * 0.02):
            half = scene.w * 0.004
            pts = [
                scene.project(xb - half, 1.0),
                scene.project(xb + half, 1.0),
                scene.project(xb + half, 60),
                scene.project(xb - half, 60),
            ]
            scene.polygon(pts, paint, ROAD)


def _facades(scene: _Scene, layout: dict, side: str, kind: str) -> None:
    """Building facades (or a tree line) standing on the outer edge of one side."""
    rng, h, w = scene.rng, scene.h, scene.w
    sign = -1 if side == "l" else 1
    base_xb = layout[f"road_{side}"] + sign * (layout[f"walk_{side}"] + layout[f"verge_{side}"])
    far_x = -0.2 * w if side == "l" else 1.2 * w
    # Depth along the facade line at which it leaves the image.
    z_edge = max((base_xb - scene.vx) / (far_x - scene.vx), 1.0)
    if kind == "open":
        grass = _jitter(rng, (110, 140, 70), 20)
        pts = [(scene.vx, scene.horizon), (far_x, scene.horizon), (far_x, h * 2), (base_xb, h)]
        scene.polygon(pts, grass, TERRAIN)
        return
    z = z_edge
    while z < 60:
        z1 = z + rng.uniform(0.4, 1.5) * z
        x0, y0 = scene.project(base_xb, z)
        x1, y1 = scene.project(base_xb, z1)
        if kind == "trees":
            tree_h = rng.uniform(0.6, 1.2) * (h - scene.horizon)
            green = _jitter(rng, rng.choice([(70, 110, 40), (100, 130, 50), (50, 80, 40)]), 15)
            pts = [(x0, y0 - tree_h / z), (x1, y1 - tree_h / z1), (x1, y1), (x0, y0)]
            if z == z_edge:
                pts += [(far_x, h * 2), (far_x, y0 - tree_h / z)]
            scene.polygon(pts, green, VEGETATION)
            for _ in range(3):
                t = rng.uniform(0, 1)
                scene.ellipse(
                    x0 + (x1 - x0) * t,
                    y0 + (y1 - y0) * t - tree_h / (z + (z1 - z) * t),
                    abs(x1 - x0) * 0.4 + 1,
                    tree_h / z * 0.25,
                    _shade(green, rng.uniform(0.8, 1.2)),
                    VEGETATION,
                )
        elif rng.random() < 0.1:  # a gap between buildings: sky shows through
            pass
        else:
            height = rng.uniform(0.8, 3.0) * (h - scene.horizon) * (1 + scene.horizon / h)
            palette = [(70, 70, 72), (150, 140, 125), (170, 100, 80), (200, 195, 185),
                       (110, 105, 100), (140, 150, 160), (190, 170, 120)]  # fmt: skip
            wall = _jitter(rng, palette[rng.integers(len(palette))], 14)
            t0, t1 = y0 - height / z, y1 - height / z1
            pts = [(x0, t0), (x1, t1), (x1, y1), (x0, y0)]
            if z == z_edge:
                pts += [(far_x, h * 2), (far_x, t0)]
            scene.polygon(pts, wall, BUILDING)
            _windows(scene, (x0, y0, t0), (x1, y1, t1))
        z = z1


def _windows(scene: _Scene, near, far) -> None:
    rng = scene.rng
    (x0, b0, t0), (x1, b1, t1) = near, far
    if abs(x1 - x0) < 4:
        return
    cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 8))
    glass = _jitter(rng, rng.choice([(40, 50, 60), (90, 110, 130), (200, 190, 150)]), 20)
    frame = rng.uniform(0.2, 0.45)
    for i in range(cols):
        for j in range(rows):
            if rng.random() < 0.1:
                continue
            u0, u1 = (i + frame) / cols, (i + 1 - frame) / cols
            v0, v1 = (j + frame) / rows * 0.9 + 0.05, (j + 1 - frame) / rows * 0.9 + 0.05

            def pt(u, v):
                x = x0 + (x1 - x0) * u
                b, t = b0 + (b1 - b0) * u, t0 + (t1 - t0) * u
                return x, b + (t - b) * v

            color = _shade(glass, rng.uniform(0.8, 1.2))
            scene.polygon([pt(u0, v0), pt(u1, v0), pt(u1, v1), pt(u0, v1)], color, BUILDING)


def _wall_or_fence(scene: _Scene, layout: dict, side: str) -> None:
    rng, h = scene.rng, scene.h
    sign = -1 if side == "l" else 1
    xb = layout[f"road_{side}"] + sign * (layout[f"walk_{side}"] + layout[f"verge_{side}"]) * 0.98
    z0 = rng.uniform(1.0, 3.0)
    z1 = z0 * rng.uniform(1.5, 4.0)
    height = rng.uniform(0.15, 0.35) * (h - scene.horizon)
    (xa, ya), (xc, yc) = scene.project(xb, z0), scene.project(xb, z1)
    if rng.random() < 0.5:
        color = _jitter(rng, rng.choice([(150, 145, 135), (120, 110, 100), (180, 175, 165)]), 12)
        scene.polygon(
            [(xa, ya - height / z0), (xc, yc - height / z1), (xc, yc), (xa, ya)], color, WALL
        )
        return
    color = _jitter(rng, rng.choice([(60, 60, 60), (140, 120, 90), (180, 180, 180)]), 12)
    scene.line([(xa, ya - height / z0), (xc, yc - height / z1)], color, 2 / z0 + 1, FENCE)
    scene.line([(xa, ya - 0.5 * height / z0), (xc, yc - 0.5 * height / z1)], color, 1, FENCE)
    n = int(rng.integers(4, 12))
    for k in range(n + 1):
        z = z0 + (z1 - z0) * k / n
        x, y = scene.project(xb, z)
        scene.line([(x, y), (x, y - height / z)], color, 2 / z + 0.5, FENCE)


def _tree(scene: _Scene, xb: float, z: float) -> None:
    rng, h = scene.rng, scene.h
    x, y = scene.project(xb, z)
    size = rng.uniform(0.5, 1.0) * (h - scene.horizon) * 1.6 / z
    trunk = _jitter(rng, (90, 70, 50), 15)
    scene.rect(x - size * 0.04, y - size * 0.6, x + size * 0.04, y, trunk, VEGETATION)
    green = _jitter(
        rng, rng.choice([(60, 110, 40), (110, 140, 50), (150, 140, 60), (40, 80, 40)]), 15
    )
    for _ in range(int(rng.integers(3, 7))):
        scene.ellipse(
            x + rng.normal(0, size * 0.15),
            y - size * (0.7 + rng.normal(0, 0.1)),
            size * rng.uniform(0.15, 0.3),
            size * rng.uniform(0.12, 0.25),
            _shade(green, rng.uniform(0.75, 1.25)),
            VEGETATION,
        )


def _pole(scene: _Scene, xb: float, z: float) -> None:
    rng, h = scene.rng, scene.h
    x, y = scene.project(xb, z)
    height = rng.uniform(0.9, 1.5) * (h - scene.horizon) * 1.4 / z
    width = max(1.0, scene.w * 0.008 / z)
    color = _jitter(rng, rng.choice([(120, 120, 120), (60, 60, 60), (90, 100, 90)]), 10)
    top = y - height
    scene.rect(x - width / 2, top, x + width / 2, y, color, POLE)
    kind = rng.random()
    if kind < 0.45:  # traffic sign
        r = max(1.5, scene.w * rng.uniform(0.018, 0.03) / z)
        cy = top + r * 1.2
        shape = rng.integers(3)
        face = _jitter(
            rng,
            [(200, 30, 30), (30, 70, 170), (230, 200, 40), (235, 235, 235)][rng.integers(4)],
            15,
        )
        if shape == 0:
            scene.ellipse(x, cy, r, r, face, TRAFFIC_SIGN)
            scene.ellipse(x, cy, r * 0.6, r * 0.6, _jitter(rng, (240, 240, 240), 10), TRAFFIC_SIGN)
        elif shape == 1:
            scene.polygon([(x - r, cy + r), (x + r, cy + r), (x, cy - r)], face, TRAFFIC_SIGN)
        else:
            scene.rect(x - r * 1.3, cy - r * 0.8, x + r * 1.3, cy + r * 0.8, face, TRAFFIC_SIGN)
    elif kind < 0.8:  # traffic light
        bw = max(2.0, scene.w * 0.012 / z)
        bh = bw * 2.6
        scene.rect(
            x - bw / 2, top, x + bw / 2, top + bh, _jitter(rng, (30, 30, 30), 8), TRAFFIC_LIGHT
        )
        lit = rng.integers(3)
        for k, color in enumerate(((220, 40, 30), (230, 170, 30), (40, 200, 80))):
            glow = color if k == lit else _shade(color, 0.25)
            scene.ellipse(x, top + bh * (k + 0.5) / 3, bw * 0.3, bw * 0.3, glow, TRAFFIC_LIGHT)
    else:  # street lamp arm: still pole
        arm = scene.w * 0.04 / z * (1 if xb < scene.vx else -1)
        scene.line([(x, top), (x + arm, top)], color, width, POLE)


def _car(scene: _Scene, xb: float, z: float, label: int = CAR) -> None:
    rng, w = scene.rng, scene.w
    x, y = scene.project(xb, z)
    if label == CAR:
        width, height = w * rng.uniform(0.22, 0.3) / z, None
        body = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 18)
        height = width * rng.uniform(0.7, 0.85)
    else:
        width = w * rng.uniform(0.3, 0.38) / z
        height = width * rng.uniform(1.0, 1.3)
        body = _jitter(
            rng,
            [(230, 230, 230), (200, 60, 40), (240, 200, 40), (60, 90, 160)][rng.integers(4)],
            15,
        )
    left, right, bottom = x - width / 2, x + width / 2, y
    wheel_r = width * 0.11
    top = bottom - height
    glass = _jitter(rng, (40, 50, 60), 12)
    if label == CAR:
        waist = bottom - height * 0.55
        scene.rect(left, waist, right, bottom - wheel_r * 0.6, body, CAR)
        inset = width * rng.uniform(0.1, 0.18)
        scene.polygon([(left + inset * 0.3, waist), (left + inset, top), (right - inset, top),
                       (right - inset * 0.3, waist)], body, CAR)  # fmt: skip
        scene.polygon([(left + inset * 0.6, waist - 1), (left + inset * 1.15, top + height * 0.08),
                       (right - inset * 1.15, top + height * 0.08), (right - inset * 0.6, waist - 1)],
                      glass, CAR)  # fmt: skip
        for sx in (left + width * 0.08, right - width * 0.16):  # rear lights
            scene.rect(sx, waist + height * 0.08, sx + width * 0.08, waist + height * 0.16,
                       _jitter(rng, (200, 30, 30), 15), CAR)  # fmt: skip
    else:
        scene.rect(left, top, right, bottom - wheel_r * 0.6, body, label)
        rows = 1 if label == BUS else 0
        for r in range(rows):
            scene.rect(left + width * 0.06, top + height * (0.12 + r * 0.3), right - width * 0.06,
                       top + height * (0.35 + r * 0.3), glass, label)  # fmt: skip
        if label == TRUCK:
            scene.rect(
                left, top + height * 0.55, right, top + height * 0.62, _shade(body, 0.6), label
            )
    tyre = _jitter(rng, (20, 20, 22), 5)
    for wx in (left + width * 0.18, right - width * 0.18):
        scene.ellipse(wx, bottom - wheel_r, wheel_r * 0.8, wheel_r, tyre, label)


def _person(scene: _Scene, xb: float, z: float, label: int = PERSON, lift: float = 0.0) -> None:
    rng, h = scene.rng, scene.h
    x, y = scene.project(xb, z)
    y -= lift
    height = rng.uniform(0.45, 0.6) * (h - scene.horizon) * 1.4 / z
    width = height * rng.uniform(0.22, 0.3)
    skin = _jitter(rng, [(230, 190, 160), (190, 140, 100), (120, 80, 55)][rng.integers(3)], 10)
    top_color = _jitter(rng, rng.integers(0, 256, 3), 5)
    legs = _jitter(
        rng, [(40, 40, 60), (30, 30, 30), (110, 100, 90), (60, 80, 130)][rng.integers(4)], 10
    )
    head_r = height * 0.08
    scene.ellipse(x, y - height + head_r, head_r * 0.9, head_r, skin, label)
    torso_top, torso_bottom = y - height + 2 * head_r, y - height * 0.45
    scene.polygon([(x - width * 0.45, torso_top), (x + width * 0.45, torso_top),
                   (x + width * 0.4, torso_bottom), (x - width * 0.4, torso_bottom)],
                  top_color, label)  # fmt: skip
    if label == PERSON:
        stride = rng.uniform(0, 0.25) * width
        for dx in (-1, 1):
            scene.polygon([(x + dx * width * 0.05, torso_bottom), (x + dx * width * 0.35, torso_bottom),
                           (x + dx * (width * 0.3 + stride), y), (x + dx * (width * 0.05 + stride * 0.5), y)],
                          legs, label)  # fmt: skip
    else:
        scene.rect(
            x - width * 0.3, torso_bottom, x + width * 0.3, torso_bottom + height * 0.2, legs, label
        )


def _cyclist(scene: _Scene, xb: float, z: float) -> None:
    rng, h = scene.rng, scene.h
    x, y = scene.project(xb, z)
    size = rng.uniform(0.25, 0.35) * (h - scene.horizon) * 1.4 / z
    frame = _jitter(rng, rng.integers(0, 256, 3), 5)
    r = size * 0.35
    width = max(1.0, size * 0.06)
    for wx in (x - size * 0.55, x + size * 0.55):
        box = [wx - r, y - 2 * r, wx + r, y]
        scene.draw_image.ellipse(box, outline=(25, 25, 25), width=int(max(1, width)))
        scene.draw_mask.ellipse(box, outline=BICYCLE, width=int(max(1, width)))
    pts = [
        (x - size * 0.55, y - r),
        (x, y - r * 1.8),
        (x + size * 0.55, y - r),
        (x - size * 0.1, y - r),
    ]
    scene.line(pts, frame, width, BICYCLE)
    _person(scene, xb, z, label=RIDER, lift=r * 1.6)


def _post_process(scene: _Scene, mode: str) -> np.ndarray:
    rng, h, w = scene.rng, scene.h, scene.w
    image = np.asarray(scene.image, dtype=np.float32)
    gain = {"day": 1.05, "overcast": 0.9, "dusk": 0.8, "dark": 0.55}[mode] * rng.uniform(0.85, 1.15)
    cast = rng.normal(1.0, 0.06, 3).astype(np.float32)
    # Low-frequency shading: a coarse random field upsampled to the frame.
    coarse = rng.uniform(0.8, 1.2, (4, 8)).astype(np.float32)
    shading = np.array(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))
    shading *= gain
    # Cast shadows across the ground (they change the photo, not the labels).
    for _ in range(rng.integers(0, 3)):
        y0 = rng.uniform(scene.horizon, h)
        x0 = rng.uniform(-0.2, 1.0) * w
        shadow = Image.new("L", (w, h), 0)
        ImageDraw.Draw(shadow).polygon(
            [
                (x0, y0),
                (x0 + rng.uniform(0.1, 0.5) * w, y0),
                (x0 + rng.uniform(0.2, 0.7) * w, h),
                (x0, h),
            ],
            fill=255,
        )
        shading[np.asarray(shadow) > 0] *= rng.uniform(0.5, 0.8)
    image *= shading[..., None] * cast
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= rng.uniform(2, 8)
    image += noise
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene.

    Returns:
        ``(image, label_ids)``: ``(H, W, 3)`` uint8 photo and ``(H, W)`` uint8 official
        Cityscapes label ids.
    """
    scene = _Scene(rng, height, width)
    mode = ("day", "overcast", "dusk", "dark")[rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])]
    _sky(scene, mode)
    w = width
    road_l = w * rng.uniform(-0.35, 0.2)
    road_r = w * rng.uniform(0.8, 1.35)
    layout = {
        "road_l": road_l,
        "road_r": road_r,
        "walk_l": w * rng.uniform(0.15, 0.6),
        "walk_r": w * rng.uniform(0.15, 0.6),
        "verge_l": w * rng.uniform(0.1, 0.4) if rng.random() < 0.4 else 0.0,
        "verge_r": w * rng.uniform(0.1, 0.4) if rng.random() < 0.4 else 0.0,
    }
    for side in ("l", "r"):
        kind = ("buildings", "trees", "open")[rng.choice(3, p=[0.72, 0.2, 0.08])]
        _facades(scene, layout, side, kind)
    _ground(scene, layout)
    _lane_markings(scene, layout)

    # Objects, drawn far to near so nearer ones occlude.
    objects: list[tuple[float, callable, tuple]] = []
    for side in ("l", "r"):
        sign = -1 if side == "l" else 1
        edge = layout[f"road_{side}"]
        walk = layout[f"walk_{side}"]
        for _ in range(rng.integers(0, 4)):
            xb = edge + sign * walk * rng.uniform(0.1, 0.3)
            objects.append((rng.uniform(1.1, 12), _pole, (xb,)))
        for _ in range(rng.integers(0, 4)):
            xb = edge + sign * (walk + layout[f"verge_{side}"] * 0.5) * rng.uniform(0.6, 1.0)
            objects.append((rng.uniform(1.3, 15), _tree, (xb,)))
        for _ in range(rng.integers(0, 5)):
            xb = edge + sign * walk * rng.uniform(0.3, 0.9)
            objects.append((rng.uniform(1.2, 12), _person, (xb,)))
        if rng.random() < 0.35:
            _wall_or_fence(scene, layout, side)
    for _ in range(rng.integers(1, 6)):
        xb = road_l + (road_r - road_l) * rng.uniform(0.15, 0.85)
        z = rng.uniform(1.4, 14)
        kind = rng.random()
        if kind < 0.8:
            objects.append((z, _car, (xb,)))
        else:
            objects.append((z, _car, (xb, TRUCK if kind < 0.9 else BUS)))
    if rng.random() < 0.3:
        xb = road_l + (road_r - road_l) * rng.choice([0.1, 0.9])
        objects.append((rng.uniform(1.5, 8), _cyclist, (xb,)))
    for z, draw, args in sorted(objects, key=lambda o: -o[0]):
        draw(scene, args[0], z, *args[1:])

    image = _post_process(scene, mode)
    return image, np.asarray(scene.mask, dtype=np.uint8).copy()


# --- a short drive: the camera moving down one synthetic street -------------------------------

#: Depth units per frame at which the camera moves (1 unit = the distance to the bottom row).
DRIVE_SPEED = 0.15
_DRIVE_NEAREST = 0.3  # depth at which drawing clips a facade (far off the frame by then)
_DRIVE_VISIBLE = (0.8, 18.0)  # objects are drawn between these depths


_DRIVE_CHUNK = 10.0  # the street is laid out in chunks of this depth, each from its own seed


def _drive_world(seed: int, travel: float) -> dict:
    """One street, laid out in world depth (camera-independent), widths as fractions of
    the frame width: facades, lane dashes, and objects with their own drawing seeds.

    The street is built chunk by chunk (each chunk from ``(seed, chunk)``), so what stands
    at a depth does not depend on how far the drive goes (``travel``).
    """
    rng = np.random.default_rng([int(seed), 7])
    layout = {
        "road_l": rng.uniform(-0.15, 0.15),
        "road_r": rng.uniform(0.85, 1.15),
        "walk_l": rng.uniform(0.2, 0.45),
        "walk_r": rng.uniform(0.2, 0.45),
        "verge_l": 0.0,
        "verge_r": rng.uniform(0.1, 0.3) if rng.random() < 0.5 else 0.0,
    }
    road_l, road_r = layout["road_l"], layout["road_r"]
    objects = [
        ("car", road_l + (road_r - road_l) * 0.62, 4.0, 0.75),  # the car ahead
        ("bus", road_l + (road_r - road_l) * 0.3, 9.0, -0.6),  # oncoming traffic
        ("car", road_l + (road_r - road_l) * 0.3, 14.0, -0.8),
        ("cyclist", road_l + (road_r - road_l) * 0.85, 3.0, 0.35),
    ]
    world = {
        "layout": layout,
        "facades": [],
        "objects": [(*o, int(rng.integers(2**31))) for o in objects],
        "horizon": rng.uniform(0.38, 0.45),
        "vx": rng.uniform(0.45, 0.55),
        "dash": (rng.uniform(0.4, 0.7), rng.uniform(0.6, 1.2)),  # length, gap (depth units)
        "seed": int(rng.integers(2**31)),
    }
    far = _DRIVE_VISIBLE[1] * 3 + travel
    for chunk in range(int(np.ceil(far / _DRIVE_CHUNK))):
        _drive_chunk(world, np.random.default_rng([int(seed), 7, chunk]), chunk * _DRIVE_CHUNK)
    return world


def _drive_chunk(world: dict, rng: np.random.Generator, start: float) -> None:
    """Facades and objects standing between depth ``start`` and ``start + _DRIVE_CHUNK``."""
    layout, end = world["layout"], start + _DRIVE_CHUNK
    for side in ("l", "r"):
        d = start
        while d < end:
            d1 = min(d + rng.uniform(0.8, 2.5), end)
            if rng.random() >= 0.12:  # else a gap between buildings: sky shows through
                world["facades"].append({"side": side, "d0": d, "d1": d1, "height": rng.uniform(0.9, 3.0),
                                         "seed": int(rng.integers(2**31))})  # fmt: skip
            d = d1
    objects = []
    for side in ("l", "r"):
        sign = -1 if side == "l" else 1
        edge, walk = layout[f"road_{side}"], layout[f"walk_{side}"]
        for d in np.arange(start + rng.uniform(0.5, 3.0), end, rng.uniform(2.5, 4.0)):
            objects.append(("pole", edge + sign * walk * 0.2, d, 0.0))
        for _ in range(int(_DRIVE_CHUNK * 0.5)):
            objects.append(("tree", edge + sign * walk * 0.75, rng.uniform(start, end), 0.0))
        for _ in range(int(_DRIVE_CHUNK * 0.4)):
            lateral = edge + sign * walk * rng.uniform(0.35, 0.9)
            objects.append(("person", lateral, rng.uniform(start, end), 0.0))
        for d in np.arange(start + rng.uniform(0.5, 4.0), end, rng.uniform(2.0, 5.0)):
            if rng.random() < 0.6:  # parked cars along the kerb
                objects.append(("car", edge - sign * 0.08, d, 0.0))
    world["objects"] += [(*o, int(rng.integers(2**31))) for o in objects]


def _drive_facade(scene: _Scene, layout: dict, facade: dict, camera: float) -> None:
    h, w = scene.h, scene.w
    sign = -1 if facade["side"] == "l" else 1
    side = facade["side"]
    base = layout[f"road_{side}"] + sign * (layout[f"walk_{side}"] + layout[f"verge_{side}"])
    base *= w
    z0, z1 = facade["d0"] - camera, facade["d1"] - camera
    if z1 <= _DRIVE_NEAREST:
        return
    rng = np.random.default_rng(facade["seed"])
    height = facade["height"] * (h - scene.horizon) * (1 + scene.horizon / h)
    palette = [(70, 70, 72), (150, 140, 125), (170, 100, 80), (200, 195, 185),
               (110, 105, 100), (140, 150, 160), (190, 170, 120)]  # fmt: skip
    wall = _jitter(rng, palette[rng.integers(len(palette))], 14)

    def point(z: float, v: float) -> tuple[float, float]:
        x, y = scene.project(base, z)
        return x, y - v * height / z

    near = max(z0, _DRIVE_NEAREST)
    scene.polygon([point(near, 1), point(z1, 1), point(z1, 0), point(near, 0)], wall, BUILDING)
    cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 8))
    glass = _jitter(rng, rng.choice([(40, 50, 60), (90, 110, 130), (200, 190, 150)]), 20)
    frame = rng.uniform(0.2, 0.45)
    for i in range(cols):
        for j in range(rows):
            shade = rng.uniform(0.8, 1.2)
            za = z0 + (z1 - z0) * (i + frame) / cols
            zb = z0 + (z1 - z0) * (i + 1 - frame) / cols
            if rng.random() < 0.1 or za < _DRIVE_NEAREST + 0.1:
                continue
            va, vb = (j + frame) / rows * 0.9 + 0.05, (j + 1 - frame) / rows * 0.9 + 0.05
            corners = [point(za, va), point(zb, va), point(zb, vb), point(za, vb)]
            scene.polygon(corners, _shade(glass, shade), BUILDING)


def _drive_ground(scene: _Scene, world: dict, camera: float) -> None:
    layout, h, w = world["layout"], scene.h, scene.w
    rng = np.random.default_rng(world["seed"])
    v = (scene.vx, scene.horizon)
    road_l, road_r = layout["road_l"] * w, layout["road_r"] * w
    scene.polygon([v, (road_l, h), (road_r, h)], _jitter(rng, (105, 105, 108), 8), ROAD)
    walk_color = _jitter(rng, (160, 155, 148), 10)
    grass = _jitter(rng, (100, 140, 60), 12)
    for side in ("l", "r"):
        sign = -1 if side == "l" else 1
        edge = layout[f"road_{side}"] * w
        walk, verge = layout[f"walk_{side}"] * w, layout[f"verge_{side}"] * w
        scene.polygon([v, (edge, h), (edge + sign * walk, h)], walk_color, SIDEWALK)
        scene.polygon(
            [v, (edge, h), (edge + sign * walk * 0.06, h)], _shade(walk_color, 1.2), SIDEWALK
        )
        if verge > 0:
            scene.polygon([v, (edge + sign * walk, h), (edge + sign * (walk + verge), h)],
                          grass, TERRAIN)  # fmt: skip
    # Lane dashes fixed to the road: they stream towards the camera.
    paint = (232, 232, 222)
    length, gap = world["dash"]
    xb = (road_l + road_r) / 2
    half = w * 0.006
    period = length + gap
    d = np.floor(camera / period) * period
    while d - camera < _DRIVE_VISIBLE[1] * 2:
        za, zb = max(d - camera, 0.5), d + length - camera
        if zb > 0.5:
            corners = [scene.project(xb - half, za), scene.project(xb + half, za),
                       scene.project(xb + half, zb), scene.project(xb - half, zb)]  # fmt: skip
            scene.polygon(corners, paint, ROAD)
        d += period


def drive_frames(
    frames: int,
    height: int = DEFAULT_SIZE[0],
    width: int = DEFAULT_SIZE[1],
    seed: int = DEFAULT_SEED,
    speed: float = DRIVE_SPEED,
):
    """A short dashcam-like sequence: the camera moving down one synthetic street, past
    parked cars, poles, trees and people, behind a car and a cyclist, with oncoming
    traffic. Frame ``t`` depends only on ``(seed, t)`` and is drawn at ``(height, width)``.

    Yields:
        ``(image, label_ids)`` per frame: ``(H, W, 3)`` uint8 and ``(H, W)`` uint8 official
        Cityscapes label ids, as :func:`render_scene`.
    """
    world = _drive_world(seed, frames * speed)
    horizon, vx = world["horizon"], world["vx"]
    for t in range(frames):
        camera = t * speed
        scene = _Scene(np.random.default_rng(world["seed"]), height, width)
        scene.horizon, scene.vx = height * horizon, width * vx
        _sky(scene, "day")
        for facade in world["facades"]:
            _drive_facade(scene, world["layout"], facade, camera)
        _drive_ground(scene, world, camera)
        visible = []
        for kind, xb, depth, velocity, object_seed in world["objects"]:
            z = depth + velocity * camera - camera
            if _DRIVE_VISIBLE[0] < z < _DRIVE_VISIBLE[1]:
                visible.append((z, kind, xb * width, object_seed))
        for z, kind, xb, object_seed in sorted(visible, key=lambda o: -o[0]):
            scene.rng = np.random.default_rng(object_seed)  # the same look in every frame
            if kind == "pole":
                _pole(scene, xb, z)
            elif kind == "tree":
                _tree(scene, xb, z)
            elif kind == "person":
                _person(scene, xb, z)
            elif kind == "cyclist":
                _cyclist(scene, xb, z)
            else:
                _car(scene, xb, z, BUS if kind == "bus" else CAR)
        # Lighting and shading stay put; sensor noise changes from frame to frame.
        scene.rng = np.random.default_rng([world["seed"], 1])
        image = _post_process(scene, "day").astype(np.int16)
        noise = np.random.default_rng([world["seed"], 2, t]).normal(0, 2.0, image.shape)
        image = np.clip(image + noise.round().astype(np.int16), 0, 255).astype(np.uint8)
        yield image, np.asarray(scene.mask, dtype=np.uint8).copy()
