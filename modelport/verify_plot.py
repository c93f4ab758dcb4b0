"""Error-vs-magnitude plots for failing verifications: where, in the reference's range, the artifact is off."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def error_plot(expected: dict[str, np.ndarray], got: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path:
    """One panel per output: |artifact - reference| against |reference| for every value, one colour per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(expected)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        ref = np.abs(expected[name].astype(np.float64).ravel())
        for label, outputs in got.items():
            if name in outputs and outputs[name].shape == expected[name].shape:
                err = np.abs(outputs[name].astype(np.float64).ravel() - expected[name].astype(np.float64).ravel())
                ax.scatter(ref, np.maximum(err, 1e-12), s=3, alpha=0.4, label=Path(label).name)
        ax.set(xlabel="|reference|", ylabel="|artifact - reference|", yscale="log", title=name)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
