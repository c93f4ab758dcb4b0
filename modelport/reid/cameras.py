"""Camera conditions for the synthetic scene: light that changes across the frame and over time, colour,
optics, sensor noise and compression, as a camera other than the one a model was prepared on would show it.

The demo and the tests render one scene through three cameras: ``A`` (clean daylight, what the demo's model is
prepared on), ``B`` (a street at dusk under mixed lighting: warm lamp pools and cool shade across the frame,
flickering, white balance that drifts, low contrast, sensor noise, blocky compression) and ``C`` (dense fog:
a fifth of the contrast left, every pixel pulled towards a grey veil). The people in the scene differ mainly
by clothing colour, so what hurts in B is what changes a person's colour along a track and pushes different
people's colours together; a global colour cast alone does not, since it keeps their relative differences.
C's shift is one affine map of intensity for every pixel and channel: through the first convolution it is a
per-channel affine change of the first BatchNorm's input, which re-estimating BatchNorm statistics (AdaBN)
undoes up to the convolution's zero padding; B's light varies across the frame, which no global statistic
undoes (benchmarks/REID_FINETUNE.md). Everything here is synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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
    contrast: float = 1.0  # < 1: haze, pulls every pixel towards mid-grey
    blur: float = 0.0  # Gaussian blur sigma in pixels (0: none)
    scale: float = 1.0  # the sensor's resolution as a share of the frame's: < 1 renders detail away
    lighting: float = 0.0  # strength of light pools and shade across the frame, each with its own colour
    flicker: float = 0.0  # frame-to-frame brightness swing (mains-powered lamps, auto exposure hunting)
    drift: float = 0.0  # slow per-channel white-balance drift over time (share of each gain)
    noise: float = 0.0  # sensor noise sigma in 0..255 units, more in the shadows as in real sensors
    jpeg: int = 0  # JPEG quality the frames pass through (0: none): 8x8 blocks, smeared colour
    seed: int = 0  # where the light pools lie and how the drift and flicker go
    description: str = ""

    def __post_init__(self) -> None:
        if not (0.05 <= self.scale <= 1.0 and self.brightness > 0 and self.blur >= 0 and min(self.cast) > 0
                and 0 <= self.saturation <= 1 and 0 < self.contrast <= 1 and 0 <= self.lighting <= 1
                and 0 <= self.flicker < 1 and 0 <= self.drift < 1 and self.noise >= 0 and 0 <= self.jpeg <= 100):
            raise CameraError(f"camera {self.name!r}: need 0.05 <= scale <= 1, brightness > 0, blur >= 0, "
                              f"0 <= saturation <= 1, 0 < contrast <= 1, lighting in [0, 1], flicker and drift "
                              f"in [0, 1), noise >= 0, jpeg in [0, 100] and positive cast gains (got scale "
                              f"{self.scale}, brightness {self.brightness}, blur {self.blur}, saturation "
                              f"{self.saturation}, contrast {self.contrast}, lighting {self.lighting}, flicker "
                              f"{self.flicker}, drift {self.drift}, noise {self.noise}, jpeg {self.jpeg}, cast "
                              f"{self.cast})")

    def apply(self, frame: np.ndarray, t: int = 0) -> np.ndarray:
        """``frame`` (H, W, 3 float32 BGR, 0..255) as this camera sees it at frame ``t``, same size and dtype.
        The same camera, frame and ``t`` always give the same result."""
        import cv2

        h, w = frame.shape[:2]
        out = frame
        if self.lighting > 0:  # the light falling on the scene: pools and shade, each its own colour
            out = out * light_field(h, w, self.lighting, self.seed)
        if self.scale < 1.0:  # fewer pixels on the sensor, shown at the frame's size (boxes keep their place)
            small = cv2.resize(out, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                               interpolation=cv2.INTER_AREA)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
        if self.saturation < 1.0:
            grey = out @ np.asarray([0.114, 0.587, 0.299], np.float32)  # BGR luma
            out = grey[..., None] + (out - grey[..., None]) * np.float32(self.saturation)
        gain = np.asarray(self.cast, np.float32) * np.float32(self.brightness) * self._gain_at(t)
        out = out * gain
        if self.contrast < 1.0:
            out = np.float32(128.0 * self.brightness) + (out - np.float32(128.0 * self.brightness)) * np.float32(
                self.contrast)
        if self.noise > 0:  # shot noise grows with the signal's square root; read noise is there even in the dark
            field = noise_field(h, w, self.seed, t)
            level = cv2.sqrt(np.clip(out, 0, 255) * np.float32(1 / 255.0)) + np.float32(0.5)
            out = out + field * level * np.float32(self.noise)
        if self.jpeg:
            ok, encoded = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.jpeg])
            out = cv2.imdecode(encoded, cv2.IMREAD_COLOR).astype(np.float32)
        return out.astype(np.float32, copy=False)

    def _gain_at(self, t: int) -> np.ndarray:
        """Per-channel gain at frame ``t`` from the flicker (all channels) and the white-balance drift."""
        gain = np.ones(3, np.float32)
        if self.flicker > 0:  # a lamp's flicker beating against the frame rate, plus exposure hunting
            jitter = np.random.default_rng([self.seed, t, 1]).uniform(-1, 1)
            gain *= np.float32(1 + self.flicker * (0.6 * np.sin(t * 2.3) + 0.4 * jitter))
        if self.drift > 0:  # auto white balance wandering: each channel on its own slow cycle
            phases = np.random.default_rng([self.seed, 2]).uniform(0, 2 * np.pi, 3)
            periods = np.asarray([97.0, 131.0, 173.0])
            gain *= (1 + self.drift * np.sin(2 * np.pi * t / periods + phases)).astype(np.float32)
        return gain


NOISE_BANK = 8  # fields of unit Gaussian noise drawn once per frame size; drawing one per frame dominated


@lru_cache(maxsize=2)
def _noise_bank(height: int, width: int, seed: int) -> np.ndarray:
    bank = np.random.default_rng([seed, 4]).standard_normal((NOISE_BANK, height, width, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def noise_field(height: int, width: int, seed: int, t: int) -> np.ndarray:
    """Unit Gaussian sensor noise (H, W, 3) for frame ``t``: a field of a small bank, shifted by a per-frame
    offset so that no two nearby frames repeat it pixel for pixel."""
    rng = np.random.default_rng([seed, t, 5])
    field = _noise_bank(height, width, seed)[int(rng.integers(NOISE_BANK))]
    return np.roll(field, (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))


@lru_cache(maxsize=4)
def light_field(height: int, width: int, strength: float, seed: int) -> np.ndarray:
    """(H, W, 3) float32 gains (cached, read-only): a few soft pools of warm lamp light and cool shaded
    stretches across the frame, mostly varying along x (where people walk), at ``strength`` (0: uniform 1)."""
    rng = np.random.default_rng([seed, 3])
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    field = np.full((height, width, 3), 1.0 - 0.55 * strength, np.float32)  # ambient: the dusk sky
    colours = {"sodium lamp": (0.35, 0.75, 1.35), "white LED": (1.2, 1.1, 0.95), "shop window": (0.8, 1.25, 0.9),
               "blue shade": (1.3, 0.95, 0.6)}
    centres = np.sort(rng.uniform(0.05, 0.95, 5))
    for centre, name in zip(centres, rng.permutation(list(colours) + ["sodium lamp"])[:5]):
        spread = rng.uniform(0.06, 0.13)
        pool = np.exp(-((x - centre) ** 2) / (2 * spread ** 2) - ((y - rng.uniform(0.55, 0.9)) ** 2) / 0.18)
        field += (strength * 1.3 * pool)[..., None] * np.asarray(colours[str(name)], np.float32)
    field.flags.writeable = False
    return field


CAMERAS: dict[str, CameraConditions] = {c.name: c for c in (
    CameraConditions("A", description="clean daylight: neutral colour, even light, full resolution"),
    CameraConditions("B", cast=(0.9, 1.0, 1.1), saturation=0.45, brightness=0.75, contrast=0.6, blur=0.8,
                     scale=0.5, lighting=0.8, flicker=0.12, drift=0.2, noise=9.0, jpeg=25, seed=7,
                     description="a street at dusk: warm lamp pools and cool shade across the frame (a person "
                                 "changes colour walking through them), flicker, drifting white balance, low "
                                 "contrast and saturation, sensor noise, half resolution, blocky compression"),
    CameraConditions("C", contrast=0.2,
                     description="dense fog (or a fogged-up dome): a fifth of the scene's contrast left, every "
                                 "pixel pulled towards a mid-grey veil, the same for every pixel and channel"),
)}


def camera(name: str | CameraConditions) -> CameraConditions:
    """The named preset (``A``, ``B``, ``C``), or ``name`` itself when it already is one."""
    if isinstance(name, CameraConditions):
        return name
    if name not in CAMERAS:
        raise CameraError(f"unknown camera {name!r}", hint=f"cameras: {', '.join(CAMERAS)}")
    return CAMERAS[name]
