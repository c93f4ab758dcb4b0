"""The store's tables, one text for both engines, and its versioned migrations.

``reid_meta``'s ``schema_version`` says which migrations a database has had; opening one applies the
missing ones in order, in one transaction. A database from before versioning (no such row) is version 0:
migration 1 only adds what such a file may lack, so existing SQLite files open unchanged in meaning. A
database whose version is newer than this modelport knows is refused, never written.
"""

from __future__ import annotations

from modelport import sqlstore
from modelport.sqlstore import Database, DatabaseError, Migration, render, statements

REQUIRED_COLUMNS = ("id", "video", "frame_index", "timestamp", "class_name", "confidence",
                    "x1", "y1", "x2", "y2", "track_id")

# ``{id}``, ``{real}``, ``{bigint}``, ``{vector}``, ``{without_rowid}``: the engine's words (Database.types).
DETECTIONS = """
CREATE TABLE IF NOT EXISTS object_detections (
    id {id},
    video TEXT NOT NULL,
    frame_index {bigint} NOT NULL,      -- 0-based position in the video (MOT files count from 1)
    timestamp {real},                    -- seconds from the start of the video
    class_name TEXT NOT NULL DEFAULT 'person',
    confidence {real},
    x1 {real} NOT NULL, y1 {real} NOT NULL, x2 {real} NOT NULL, y2 {real} NOT NULL,
    track_id {bigint},
    reid_embedding {vector}                -- the default model's float32 vector
);
CREATE INDEX IF NOT EXISTS idx_object_detections_video_frame ON object_detections (video, frame_index);
"""

MODELPORT = """
CREATE TABLE IF NOT EXISTS reid_models (
    model_key TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, model_type TEXT NOT NULL,
    path TEXT, dim {bigint} NOT NULL, created {real} NOT NULL);
CREATE TABLE IF NOT EXISTS reid_embeddings (
    detection_id {bigint} NOT NULL, model_key TEXT NOT NULL, embedding {vector} NOT NULL,
    PRIMARY KEY (detection_id, model_key)){without_rowid};
CREATE TABLE IF NOT EXISTS reid_quality (detection_id {bigint} PRIMARY KEY, sharpness {real} NOT NULL);
CREATE TABLE IF NOT EXISTS reid_ground_truth (detection_id {bigint} PRIMARY KEY, person_id {bigint} NOT NULL);
CREATE TABLE IF NOT EXISTS reid_identities (
    model_key TEXT NOT NULL, detection_id {bigint} NOT NULL, person_id {bigint} NOT NULL,
    PRIMARY KEY (model_key, detection_id)){without_rowid};
CREATE TABLE IF NOT EXISTS reid_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reid_claims (
    detection_id {bigint} NOT NULL, model_key TEXT NOT NULL, worker TEXT NOT NULL, claimed {real} NOT NULL,
    PRIMARY KEY (detection_id, model_key)){without_rowid};
"""
# Extraction claims detections in (video, frame) order, a batch at a time: without this index every claim
# would scan the table. An index changes no column or value of the table it indexes.
ORDER_INDEX = "CREATE INDEX IF NOT EXISTS idx_object_detections_video_frame ON object_detections (video, frame_index)"


def _v1(db: Database) -> None:
    """modelport's reid_* tables, the shared reid_embedding column and the (video, frame) index."""
    db.add_vector_type()
    for statement in statements(render(MODELPORT, db)):
        db.execute(statement)
    if "reid_embedding" not in db.columns("object_detections"):
        # A nullable column added at the end changes no existing row or query.
        db.execute(f"ALTER TABLE object_detections ADD COLUMN reid_embedding {db.types['vector']}")
    if not db.has_index("idx_object_detections_video_frame"):
        db.execute(ORDER_INDEX)


# In order; a new schema is one more entry here (never an edit of an applied one).
MIGRATIONS: list[Migration] = [Migration(1, _v1)]


def latest() -> int:
    return MIGRATIONS[-1].version


def schema_version(db: Database) -> int:
    """The version recorded in ``db``; 0 for a database from before versioning."""
    return sqlstore.schema_version(db, "reid_meta")


def check_detections(db: Database) -> None:
    """``object_detections`` exists with every column modelport reads."""
    cols = db.columns("object_detections")
    if not cols:
        raise DatabaseError(f"{db}: has no object_detections table",
                            hint="import detections first with `modelport reid import`")
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise DatabaseError(f"{db}: object_detections lacks column(s) {', '.join(missing)}",
                            hint=f"required columns: {', '.join(REQUIRED_COLUMNS)} (+ reid_embedding)")


def migrate(db: Database) -> int:
    """Apply the migrations ``db`` lacks, in order, in one transaction; returns the version it now has."""
    return sqlstore.migrate(db, MIGRATIONS, "reid_meta")
