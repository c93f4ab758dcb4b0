"""The dashboard's job history on disk: one JSON file in the root's hidden state folder, replaced whole by
an atomic rename at every change of a job, so a restarted ``modelport ui`` shows the jobs it ran before."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.atomic import atomic_write_text
from modelport.errors import ModelportError

if TYPE_CHECKING:
    from modelport.ui.jobs import Job

log = logging.getLogger("modelport.ui")

STATE_DIR = ".modelport"  # hidden: the listing skips it
HISTORY_FILE = "ui-jobs.json"
SCHEMA = 1
LOG_KEPT = 60  # log lines kept per job on disk (the live job keeps more)
FIELDS = ("id", "kind", "title", "target", "params", "state", "created", "started", "finished", "result", "error")


class HistoryError(ModelportError):
    """The job history file cannot be read as a job list (it is then set aside, not overwritten)."""


def history_path(root: Path) -> Path:
    return Path(root) / STATE_DIR / HISTORY_FILE


def job_record(job: "Job") -> dict:
    """What the history keeps of a job: its fields, and the tail of its log."""
    record = {name: getattr(job, name) for name in FIELDS}
    record["log"] = list(job.log)[-LOG_KEPT:]
    return record


class JobHistory:
    """Reads and writes ``[job record, ...]`` (newest last) at ``path``; writing never raises."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._warned = False

    def read(self) -> list[dict]:
        """The stored records; a missing file is an empty history, a damaged one is renamed aside."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("job history %s cannot be read (%s): starting with an empty list", self.path, exc)
            return []
        try:
            return _records(json.loads(text), self.path)
        except (ValueError, HistoryError) as exc:
            aside = self.path.with_name(self.path.name + ".damaged")
            try:
                self.path.replace(aside)
            except OSError:
                aside = self.path
            log.warning("job history %s is damaged (%s); kept as %s, starting with an empty list", self.path,
                        getattr(exc, "message", exc), aside)
            return []

    def write(self, records: list[dict]) -> bool:
        """Replace the file with ``records``; False (and one warning) when the root cannot be written."""
        data = {"schema": SCHEMA, "jobs": records}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, default=str), force=True)  # the dashboard's own file
        except (OSError, ModelportError) as exc:
            if not self._warned:
                log.warning("job history %s cannot be written (%s): jobs are kept in memory only", self.path,
                            getattr(exc, "message", exc))
                self._warned = True
            return False
        return True


def _records(data, path: Path) -> list[dict]:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("jobs"), list):
        raise HistoryError(f"{path}: expected {{\"schema\": {SCHEMA}, \"jobs\": [...]}}")
    out = []
    for item in data["jobs"]:
        if not isinstance(item, dict) or not all(k in item for k in FIELDS):
            raise HistoryError(f"{path}: a job record lacks one of {', '.join(FIELDS)}")
        texts = all(isinstance(item[k], str) for k in ("id", "kind", "title", "target", "state"))
        times = isinstance(item["created"], (int, float)) and all(
            item[k] is None or isinstance(item[k], (int, float)) for k in ("started", "finished"))
        shapes = isinstance(item["params"], dict) and all(
            item[k] is None or isinstance(item[k], dict) for k in ("result", "error"))
        if not (texts and times and shapes and isinstance(item.get("log", []), list)):
            raise HistoryError(f"{path}: job record {str(item.get('id'))[:20]!r} has a field of the wrong type")
        out.append(item)
    return out
