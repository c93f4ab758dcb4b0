"""SQLite store of image embeddings: one row per image file, the model that embedded them in ``meta``.

Every batch is written in one transaction, so an interrupted index keeps what it finished and resumes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import create_sqlite, is_sqlite
from modelport.errors import CorruptFileError, ExportError, ModelportError, WeightsNotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS failures (path TEXT PRIMARY KEY, error TEXT NOT NULL);
"""


PROBE_MIN_COSINE = 0.999


class IndexMismatchError(ModelportError, ValueError):
    """An index was built with a different model than the one asked for."""


@dataclass(frozen=True, slots=True)
class IndexModel:
    """What embedded an index: enough to re-open the same encoders and to refuse a different model."""

    ref: str  # image-encoder artifact path, or a CLIP model name
    clip_model: str
    dim: int
    sha256: str | None  # of the weights the encoders came from; None for random weights
    weights: str | None = None  # checkpoint file, when ``ref`` is a model name
    # Embedding of a fixed generated image: tells two models apart even when both are untrained (no sha256),
    # while any format of the same model agrees with it.
    probe: tuple[float, ...] = ()

    def same_model(self, other: "IndexModel") -> bool:
        if (self.clip_model, self.dim) != (other.clip_model, other.dim):
            return False
        if not self.probe or not other.probe:
            return self.sha256 == other.sha256
        a, b = np.asarray(self.probe), np.asarray(other.probe)
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)) >= PROBE_MIN_COSINE


class IndexStore:
    """An embedding index in one SQLite file."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise WeightsNotFoundError(f"{self.path}: index database not found",
                                       hint="build it with `modelport search index DIR --model ... --db FILE`")
        if create and not self.path.exists():
            # A new index appears with its tables, and never over a file that appeared meanwhile.
            try:
                create_sqlite(self.path, _SCHEMA, hint="pass another --db file")
            except ExportError:
                pass  # another process made it first: checked below like any existing file
            except (sqlite3.Error, OSError) as exc:
                raise CorruptFileError(f"{self.path}: could not create the index ({exc})") from None
        if not is_sqlite(self.path):
            raise CorruptFileError(f"{self.path}: not a modelport search index (not a SQLite database)",
                                   hint="pass another --db file; this one is left untouched")
        self.conn = sqlite3.connect(self.path)
        try:
            with self.conn:
                self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CorruptFileError(f"{self.path}: not a modelport search index ({exc})",
                                   hint="pass another --db file; this one is left untouched") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model(self) -> IndexModel | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
            return IndexModel(**{**data, "probe": tuple(data.get("probe", ()))})
        except (ValueError, TypeError) as exc:
            raise CorruptFileError(f"{self.path}: unreadable model record ({exc})") from None

    def bind(self, model: IndexModel) -> None:
        """Record the model of a new index; refuse to mix embeddings of two models in one."""
        known = self.model()
        if known is None:
            with self.conn:
                self.conn.execute("INSERT INTO meta VALUES ('model', ?)", (json.dumps(asdict(model)),))
        elif not known.same_model(model):
            raise IndexMismatchError(
                f"{self.path} holds {known.dim}-d embeddings of {known.clip_model} (weights sha256 "
                f"{known.sha256 or 'random'}), not of this {model.clip_model} ({model.sha256 or 'random'}): "
                "the two give different embeddings for the same image",
                hint="use another --db for a different model")

    def known(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every embedded image."""
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime_ns FROM images")}

    def add(self, rows: list[tuple[str, int, int, np.ndarray]], failures: list[tuple[str, str]] = ()) -> None:
        """Insert (or replace) a batch of (path, size, mtime_ns, embedding) and failures in one transaction."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)",
                [(p, s, m, np.asarray(e, np.float32).tobytes()) for p, s, m, e in rows])
            self.conn.executemany("DELETE FROM failures WHERE path = ?", [(p,) for p, *_ in rows])
            self.conn.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?)", list(failures))

    def embeddings(self) -> tuple[list[str], np.ndarray]:
        rows = self.conn.execute("SELECT path, embedding FROM images ORDER BY path").fetchall()
        model = self.model()
        dim = model.dim if model else 0
        if not rows:
            return [], np.zeros((0, dim), np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        return [r[0] for r in rows], matrix

    def failures(self) -> list[tuple[str, str]]:
        return self.conn.execute("SELECT path, error FROM failures ORDER BY path").fetchall()

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
