"""One dashboard job in its own process: ``python -m modelport.ui.worker JOB_DIR``.

Reads ``job.json`` (kind and checked parameters), logs the library's messages to stdout (the server keeps
the tail), and writes ``result.json``: the action's result, or the typed error's message and hint. SIGTERM
(the dashboard's Cancel) unwinds through ``finally`` blocks, so the library's staging folders are removed.
A worker whose server has gone (killed, so it never sent SIGTERM) sends itself SIGTERM and unwinds the same way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from modelport.errors import ModelportError

RESULT = "result.json"
JOB = "job.json"
SERVER_PID = "MODELPORT_UI_SERVER_PID"


def _cancelled(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _watch_parent(parent: int, every_s: float = 1.0) -> None:
    """Stop this worker once its server is gone (it is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)


def _write(folder: Path, data: dict) -> None:
    tmp = folder / f".{RESULT}.tmp"
    tmp.write_text(json.dumps(data, default=str))
    tmp.replace(folder / RESULT)


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    job = json.loads((folder / JOB).read_text())
    signal.signal(signal.SIGTERM, _cancelled)
    # The server names itself: it may be gone (and this process re-parented) before this line runs.
    server = int(os.environ.get(SERVER_PID, os.getppid()))
    threading.Thread(target=_watch_parent, args=(server,), name="watch-server", daemon=True).start()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s", force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    from modelport.ui.actions import get_action

    try:
        result = get_action(job["kind"]).run(job["params"])
    except ModelportError as exc:
        print(f"error: {exc.message}", flush=True)
        _write(folder, {"ok": False, "error": {"message": exc.message, "hint": exc.hint}})
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - reported in the page with its traceback in the log
        traceback.print_exc(file=sys.stdout)
        _write(folder, {"ok": False, "error": {"message": f"internal error: {type(exc).__name__}: {exc}",
                                               "hint": "the log above has the traceback; please report it"}})
        return 70
    _write(folder, {"ok": True, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
