"""BatchNorm calibration for untrained models (see TESTING.md: random nets otherwise ignore their input)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Reset BatchNorm running statistics and re-estimate them as a cumulative average over ``batches``.

    This is what training does to the statistics (and what AdaBN does); afterwards the features of
    different images differ, so parity checks can fail. Returns the model in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for batch in batches:
        model(batch)
    for bn in norms:
        bn.momentum = 0.1
    return model.eval()
