"""Evaluation under a shift: the val photos as another camera, in other light, would have
taken them, to measure robustness (``eval --shift camera``, ``compare --shift camera``).

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SHIFTS = ("camera",)


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


class Shift:
    """A named, deterministic change of the photos: ``Shift("camera")(image, i)``."""

    def __init__(self, name: str) -> None:
        if name not in SHIFTS:
            raise ValueError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
        self.name = name
        self._transform = _camera()

    def __call__(self, image_rgb_uint8: np.ndarray, index: int) -> np.ndarray:
        """The photo of item ``index`` under the shift: ``(H, W, 3)`` uint8 in and out."""
        import numpy as np

        self._transform.set_random_seed(int(index))
        return self._transform(image=np.ascontiguousarray(image_rgb_uint8))["image"]

    def __repr__(self) -> str:
        return f"Shift({self.name!r})"
