"""Options shared by several CLI command groups."""

from __future__ import annotations

import typer

# Help panels of each family's own options; an option given for another family's model is refused by name.
REID_PANEL = "ReID embedders (torchreid zoo)"
YOLO_PANEL = "Detectors (Ultralytics YOLO11)"
OWN_PANEL = "MobileCLIP and your own models (factory)"

TRUST_CHECKPOINT = typer.Option(
    False, "--trust-checkpoint",
    help="Unpickle detector checkpoints in full, which runs any code they hold: only for files you made yourself.")


def apply_trust(trust: bool) -> None:
    if trust:
        from modelport.trust import trust_for_this_command

        trust_for_this_command()


def fmt_number(value: float, spec: str = ".2e") -> str:
    """A number for a table; NaN (not measured) as '-'."""
    return format(value, spec) if value == value else "-"


WIDE = typer.Option(False, "--wide", help="Every column (the default table fits 80 columns; the JSON has every "
                    "field).")
