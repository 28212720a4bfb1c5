"""Evaluation under a shift: the val photos as another camera, in other light, would have
taken them (``camera``), or as cameras of other shapes and resolutions would frame them
(``geometry``), to measure robustness (``eval --shift ...``, ``compare --shift ...``).

The ``camera`` shift changes each photo by a fixed random draw of what differs between
cameras and light, with albumentations: the colour of the light (black-body 3000-15000 K),
the camera's tone curve, exposure and contrast, defocus, sensor (ISO) noise, a lower
resolution, sharpening and JPEG compression. The draw of image ``i`` depends on ``i``
alone, so every model and every run sees the same shifted photos, and models compared
under the shift are still paired image by image. Masks are not changed (the shift is
photometric).

It is chosen to differ from the training augmentations (``--photometric strong`` varies
brightness, contrast, saturation, hue and gamma, Gaussian and motion blur, Gaussian noise
and JPEG quality 35-95): the light's colour temperature, tone curves, defocus, ISO noise,
downscaling and sharpening are never seen in training, so the shift is not the training
distribution under another name. JPEG at quality 25-60 overlaps it in part.

The ``geometry`` shift makes four views of every frame, one per shape of
:data:`GEOMETRY_SHAPES` (4:3, 16:9, 1:1 and 3.3:1), each as a real camera would give it:
first the frame's own aspect is restored (the pairs' 256x256 images are squeezed 2:1
frames, so they are stretched back to 512x256: square pixels), then the largest crop of
the shape is cut at a random place, then it is rescaled by a random factor in 0.5..2
(log-uniform: a lower- or higher-resolution camera). Masks follow, nearest-neighbour. The
draw depends on the image index and the shape alone, so every model sees the same views.
The views are scored per shape (``segdemo.evaluate``), against the plain frames for the
frames' own shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SHIFTS = ("camera", "geometry")
#: Width over height of the ``geometry`` views.
GEOMETRY_SHAPES = {"4:3": 4 / 3, "16:9": 16 / 9, "1:1": 1.0, "3.3:1": 3.3}
#: Resolution of a view against the frame's: a factor drawn log-uniformly in this range.
GEOMETRY_SCALES = (0.5, 2.0)


def _camera():
    # imported here: the command line reads SHIFTS before any heavy import
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.PlanckianJitter(mode="blackbody", temperature_limit=(3000, 15000), p=0.8),
            A.RandomToneCurve(scale=0.2, per_channel=False, p=0.7),
            A.RandomBrightnessContrast(brightness_limit=(-0.3, 0.15), contrast_limit=0.2, p=0.7),
            A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.3), p=0.3),
            A.ISONoise(color_shift=(0.01, 0.03), intensity=(0.05, 0.2), p=0.5),
            A.Downscale(
                scale_range=(0.5, 0.8),
                interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
                p=0.3,
            ),
            A.Sharpen(alpha=(0.2, 0.5), lightness=(0.8, 1.0), p=0.3),
            A.ImageCompression(quality_range=(25, 60), p=0.5),
        ]
    )


def geometry_view(
    image: np.ndarray, mask: np.ndarray, index: int, shape: str, pixel_aspect: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Item ``index`` as a camera of ``shape`` (a key of :data:`GEOMETRY_SHAPES`) would
    give it: un-squeezed to square pixels (``pixel_aspect``: 2 for the pairs), cut to the
    largest crop of the shape at a random place, rescaled by a random factor in
    :data:`GEOMETRY_SCALES`; the draw depends on ``index`` and ``shape`` alone.

    Shape: ``(H, W, 3)`` uint8 and ``(H, W)`` -> the view and its mask, of equal size.
    """
    if shape not in GEOMETRY_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(GEOMETRY_SHAPES)}")
    import numpy as np

    from segdemo.images import resize_image, resize_mask

    rng = np.random.default_rng([int(index), list(GEOMETRY_SHAPES).index(shape)])
    height, width = image.shape[:2]
    if pixel_aspect != 1.0:  # square pixels: stretch the width (or the height)
        if pixel_aspect > 1:
            width = round(width * pixel_aspect)
        else:
            height = round(height / pixel_aspect)
        image, mask = resize_image(image, (height, width)), resize_mask(mask, (height, width))
    ratio = GEOMETRY_SHAPES[shape]
    crop_h, crop_w = height, round(height * ratio)
    if crop_w > width:
        crop_h, crop_w = round(width / ratio), width
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    image = np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])
    mask = np.ascontiguousarray(mask[top : top + crop_h, left : left + crop_w])
    scale = float(np.exp(rng.uniform(*np.log(GEOMETRY_SCALES))))
    size = (max(1, round(crop_h * scale)), max(1, round(crop_w * scale)))
    return resize_image(image, size), resize_mask(mask, size)


class Shift:
    """A named, deterministic change of the photos: ``Shift("camera")(image, i)``, or
    the views of ``Shift(name).view(image, mask, i, k)`` for ``k`` in ``range(views)``."""

    def __init__(self, name: str) -> None:
        if name not in SHIFTS:
            raise ValueError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
        self.name = name
        self._transform = _camera() if name == "camera" else None

    @property
    def view_names(self) -> tuple[str | None, ...]:
        """The views made of each item: the shapes, or one unnamed view."""
        return tuple(GEOMETRY_SHAPES) if self.name == "geometry" else (None,)

    @property
    def changes_geometry(self) -> bool:
        return self.name == "geometry"

    def view(
        self, image: np.ndarray, mask: np.ndarray, index: int, k: int, pixel_aspect: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """View ``k`` of item ``index``: the photo, its mask and its pixel aspect."""
        if self.name == "geometry":
            return (*geometry_view(image, mask, index, self.view_names[k], pixel_aspect), 1.0)
        return self(image, index), mask, pixel_aspect

    def __call__(self, image_rgb_uint8: np.ndarray, index: int) -> np.ndarray:
        """The photo of item ``index`` under the camera shift: ``(H, W, 3)`` uint8 in and
        out."""
        import numpy as np

        if self._transform is None:
            raise ValueError(f"the {self.name} shift changes masks too: use Shift.view")
        self._transform.set_random_seed(int(index))
        return self._transform(image=np.ascontiguousarray(image_rgb_uint8))["image"]

    def __repr__(self) -> str:
        return f"Shift({self.name!r})"
