"""The explicit opt-in to unpickle a checkpoint the user made themselves (``--trust-checkpoint``)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

log = logging.getLogger(__name__)
_TRUSTED: ContextVar[bool] = ContextVar("modelport_trusted_checkpoints", default=False)


@contextmanager
def trusted_checkpoints(enabled: bool = True) -> Iterator[None]:
    """Within this block, detector checkpoints are unpickled in full (arbitrary code can run): only for
    files you made. Entry points take ``trust_checkpoint=True`` / ``--trust-checkpoint`` and open this."""
    if not enabled:
        yield
        return
    log.warning("--trust-checkpoint: checkpoints are unpickled without restrictions; a hostile file can run code")
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def checkpoints_trusted() -> bool:
    return _TRUSTED.get()


def trust_for_this_command() -> None:
    """The CLI's form of ``trusted_checkpoints``: one command per process, so no block to close."""
    log.warning("--trust-checkpoint: checkpoints are unpickled without restrictions; a hostile file can run code")
    _TRUSTED.set(True)
