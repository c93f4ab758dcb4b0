"""Camera conditions for the synthetic scene: colour cast, brightness, blur and low resolution.

The demo and the tests render one scene through two cameras: ``A`` (clean daylight, what the demo's model is
prepared on) and ``B`` (a dim, warm, soft, low-resolution camera), so that a model prepared on camera A and
applied to camera B shows what adaptation recovers. Everything here is synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelport.errors import ModelportError


class CameraError(ModelportError, ValueError):
    """An unknown camera name or a camera setting out of range."""


@dataclass(frozen=True, slots=True)
class CameraConditions:
    name: str
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain (B, G, R)
    saturation: float = 1.0  # 0: grey, 1: as rendered (washed-out colour when below 1)
    brightness: float = 1.0  # overall gain after the cast
    blur: float = 0.0  # Gaussian blur sigma in pixels (0: none)
    scale: float = 1.0  # the sensor's resolution as a share of the frame's: < 1 renders detail away
    description: str = ""

    def __post_init__(self) -> None:
        if not (0.05 <= self.scale <= 1.0 and self.brightness > 0 and self.blur >= 0 and min(self.cast) > 0
                and 0 <= self.saturation <= 1):
            raise CameraError(f"camera {self.name!r}: need 0.05 <= scale <= 1, brightness > 0, blur >= 0, "
                              f"0 <= saturation <= 1 and positive cast gains (got scale {self.scale}, brightness "
                              f"{self.brightness}, blur {self.blur}, saturation {self.saturation}, cast {self.cast})")

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (H, W, 3 float32 BGR, 0..255) as this camera sees it, same size and dtype."""
        import cv2

        h, w = frame.shape[:2]
        out = frame
        if self.scale < 1.0:  # fewer pixels on the sensor, shown at the frame's size (boxes keep their place)
            small = cv2.resize(out, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                               interpolation=cv2.INTER_AREA)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
        if self.saturation < 1.0:
            grey = out @ np.asarray([0.114, 0.587, 0.299], np.float32)  # BGR luma
            out = grey[..., None] + (out - grey[..., None]) * np.float32(self.saturation)
        gain = np.asarray(self.cast, np.float32) * np.float32(self.brightness)
        return out * gain


CAMERAS: dict[str, CameraConditions] = {c.name: c for c in (
    CameraConditions("A", description="clean daylight: neutral colour, full resolution"),
    CameraConditions("B", cast=(0.75, 1.0, 1.3), saturation=0.35, brightness=0.5, blur=1.2, scale=0.35,
                     description="dim, washed-out and warm (orange cast, 35% saturation, 50% brightness), soft "
                                 "focus, 35% resolution"),
)}


def camera(name: str | CameraConditions) -> CameraConditions:
    """The named preset (``A``, ``B``), or ``name`` itself when it already is one."""
    if isinstance(name, CameraConditions):
        return name
    if name not in CAMERAS:
        raise CameraError(f"unknown camera {name!r}", hint=f"cameras: {', '.join(CAMERAS)}")
    return CAMERAS[name]
