"""The search index: one row per image file with its embedding, and the model that embedded them.

A SQLite file (the default) or a PostgreSQL database with pgvector (``postgresql://...``): there embeddings are
a ``vector(dim)`` column and the top k come from pgvector's exact cosine distance. Every batch is written in
one transaction, so an interrupted index keeps what it finished and resumes. The schema is versioned
(``search_meta``'s ``schema_version``, ``modelport.sqlstore``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from modelport.errors import CorruptFileError, ModelportError, WeightsNotFoundError
from modelport.sqlstore import Database, Location, Migration, StoreKind, migrate, open_store, render, statements

# ``{bytes_text}``, ``{bigint}``, ``{vector}``: the engine's words (Database.types). Paths sort by code point on
# both engines, so that equal scores rank in the same order.
TABLES = """
CREATE TABLE IF NOT EXISTS search_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS search_images (
    path {bytes_text} PRIMARY KEY, size {bigint} NOT NULL, mtime_ns {bigint} NOT NULL, embedding {vector} NOT NULL);
CREATE TABLE IF NOT EXISTS search_failures (path TEXT PRIMARY KEY, error TEXT NOT NULL);
"""
_SCHEMA = render(TABLES, Database)  # what a new SQLite file is created with
# The tables of an index file from before versioning, and what they are called now.
UNVERSIONED = {"meta": "search_meta", "images": "search_images", "failures": "search_failures"}
BUILD_HINT = "build it with `modelport search index DIR --model ... --db FILE_OR_URL`"
STORE = StoreKind("search index database", BUILD_HINT, "modelport.search.schema", CorruptFileError)
PROBE_MIN_COSINE = 0.999


def _v1(db: Database) -> None:
    """The search_* tables. An index file from before versioning has its three tables renamed (rows kept);
    only a SQLite file can be one: on a server, tables of those names belong to someone else."""
    tables = db.tables()
    if db.engine == "sqlite" and set(UNVERSIONED) <= tables and not tables & set(UNVERSIONED.values()):
        for old, new in UNVERSIONED.items():
            db.execute(f"ALTER TABLE {old} RENAME TO {new}")
    db.add_vector_type()
    for statement in statements(render(TABLES, db)):
        db.execute(statement)


# In order; a new schema is one more entry here (never an edit of an applied one).
MIGRATIONS: list[Migration] = [Migration(1, _v1)]


def _has_index(db: Database) -> bool:
    tables = db.tables()
    return "search_meta" in tables or (db.engine == "sqlite" and set(UNVERSIONED) <= tables)


def top_k(query: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine scores of the ``k`` rows of ``matrix`` most similar to ``query``, best first."""
    q = query.astype(np.float32).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
    scores = (matrix @ q) / norms
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    # Ties broken by row (path order) so that results are stable across runs.
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


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
    """An embedding index in a SQLite file or a PostgreSQL database (``location``: a path or a URL)."""

    def __init__(self, location: Location, *, create: bool = False) -> None:
        def prepare(db: Database) -> None:
            if not create and not _has_index(db):
                raise WeightsNotFoundError(f"{db}: holds no search index", hint=BUILD_HINT)
            migrate(db, MIGRATIONS, "search_meta")

        self.db = open_store(location, STORE, prepare, create=create, new_sqlite_schema=_SCHEMA)
        self.location = str(self.db)  # for messages: a path, or a URL without its password

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model(self) -> IndexModel | None:
        row = self.db.execute("SELECT value FROM search_meta WHERE key = 'model'").fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
            return IndexModel(**{**data, "probe": tuple(data.get("probe", ()))})
        except (ValueError, TypeError) as exc:
            raise CorruptFileError(f"{self.location}: unreadable model record ({exc})") from None

    def bind(self, model: IndexModel) -> None:
        """Record the model of a new index (its width fixes the vector column's); refuse to mix embeddings of
        two models in one."""
        with self.db.write():
            self.db.lock_schema()  # two processes starting one index: the second sees the first one's model
            known = self.model()
            if known is None:
                self.db.set_vector_width("search_images", "embedding", model.dim)
                self.db.execute("INSERT INTO search_meta (key, value) VALUES ('model', ?)",
                                (json.dumps(asdict(model)),))
                return
        if not known.same_model(model):
            raise IndexMismatchError(
                f"{self.location} holds {known.dim}-d embeddings of {known.clip_model} (weights sha256 "
                f"{known.sha256 or 'random'}), not of this {model.clip_model} ({model.sha256 or 'random'}): "
                "the two give different embeddings for the same image",
                hint="use another --db for a different model")

    def known(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every embedded image."""
        return {p: (s, m) for p, s, m in self.db.execute("SELECT path, size, mtime_ns FROM search_images")}

    def add(self, rows: list[tuple[str, int, int, np.ndarray]], failures: list[tuple[str, str]] = ()) -> None:
        """Insert (or replace) a batch of (path, size, mtime_ns, embedding) and failures in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT INTO search_images (path, size, mtime_ns, embedding) VALUES (?, ?, ?, ?) ON CONFLICT (path) "
                "DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, embedding = excluded.embedding",
                [(p, s, m, self.db.vector(np.asarray(e, np.float32))) for p, s, m, e in rows])
            self.db.executemany("DELETE FROM search_failures WHERE path = ?", [(p,) for p, *_ in rows])
            self.db.executemany("INSERT INTO search_failures (path, error) VALUES (?, ?) ON CONFLICT (path) "
                                "DO UPDATE SET error = excluded.error", list(failures))

    def embeddings(self) -> tuple[list[str], np.ndarray]:
        rows = self.db.execute("SELECT path, embedding FROM search_images ORDER BY path").fetchall()
        if not rows:
            model = self.model()
            return [], np.zeros((0, model.dim if model else 0), np.float32)
        return [r[0] for r in rows], self.db.vectors([r[1] for r in rows])

    def top(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(path, cosine similarity) of the ``k`` images nearest ``query``, best first, equal scores in path
        order: pgvector's exact search on PostgreSQL (no approximate index), numpy over every row elsewhere."""
        model = self.model()
        found = self.db.nearest("search_images", "path", "embedding", model.dim, query, k, then_by="path") \
            if model else None
        if found is not None:
            return [(path, 1.0 - distance) for path, distance in found]
        paths, matrix = self.embeddings()
        rows, scores = top_k(query, matrix, k)
        return [(paths[r], float(s)) for r, s in zip(rows, scores)]

    def failures(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT path, error FROM search_failures ORDER BY path")]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM search_images").fetchone()[0]
