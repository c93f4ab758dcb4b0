"""What the dashboard's export and verify jobs found for each artifact, kept in modelport's cache so the
listing can show it; an entry is dropped when the artifact changes (size or modification time)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from modelport.atomic import atomic_write_text


def _stamp(path: Path) -> list[int]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files), default=0)]


class VerificationLog:
    """``{resolved artifact path: {"passed": bool, "when": epoch, "stamp": [size, mtime_ns]}}`` in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def default(cls) -> "VerificationLog":
        from modelport.bench import cache_root

        return cls(cache_root() / "ui" / "verifications.json")

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, artifact: Path, passed: bool) -> None:
        artifact = Path(artifact).resolve()
        if not artifact.exists():
            return
        data = self._read()
        data[str(artifact)] = {"passed": bool(passed), "when": time.time(), "stamp": _stamp(artifact)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(data, indent=1), force=True)  # the cache is modelport's own

    def status(self, artifact: Path) -> str:
        """``passed``, ``failed``, or ``not checked`` (never, or the artifact changed since)."""
        artifact = Path(artifact).resolve()
        entry = self._read().get(str(artifact))
        if not entry or not artifact.exists() or entry.get("stamp") != _stamp(artifact):
            return "not checked"
        return "passed" if entry.get("passed") else "failed"
