"""Names on disk: what counts as a weights file and the stem its exports are named after (light: no torch)."""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar", ".bin")


def weights_stem(path: str | Path) -> str:
    """File name without its weights suffix: ``osnet_x1_0_market.pth.tar`` -> ``osnet_x1_0_market``."""
    name = Path(path).name
    for suffix in sorted(WEIGHT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem
