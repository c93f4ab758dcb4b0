"""Which stored model a ``--model`` value means, so one value works for extract, cluster, report and compare.

Embeddings are stored under ``<name>@<sha256[:12]>`` of the weights they came from. A weights file or an
export given to any command is matched by that sha256 (an export records its source's in its spec), not by
its name, so ``osnet_x0_25_msmt17.pt`` and its ``.onnx`` both find what either extracted.
"""

from __future__ import annotations

from pathlib import Path

from modelport.errors import UnsupportedFormatError
from modelport.reid import store
from modelport.reid.db import Database
from modelport.spec import sha256_file


def source_digest(path: str | Path) -> str | None:
    """sha256 of the weights behind ``path``: what an export's spec records, else the file's own."""
    from modelport.formats import format_of_path

    path = Path(path)
    try:
        fmt = format_of_path(path)
    except UnsupportedFormatError:
        fmt = None
    if fmt is not None and not fmt.is_weights:  # an export records the weights it came from
        digest = fmt.read_spec(path).source.sha256  # an unreadable artifact raises a typed error naming it
        if digest:
            return digest
    return sha256_file(path) if path.is_file() else None


def resolve_model(conn: Database, value: str | Path | None) -> store.ModelRecord:
    """The stored model ``value`` names: an existing weights file or export (by sha256), else a model key, name
    or key prefix; the default model when None. ModelNotInDatabaseError lists the models when nothing matches."""
    if value is None or not Path(value).exists():
        return store.get_model(conn, None if value is None else str(value))
    known = store.models(conn)
    if not known:
        raise store.DatabaseError("no embeddings in this database yet", hint="run `modelport reid extract` first")
    digest = source_digest(value)
    hits = [m for m in known if m.sha256 == digest]
    if len(hits) == 1:
        return hits[0]
    what = f"the weights of {value} (sha256 {digest[:12] if digest else 'unknown'})"
    if hits:
        raise store.ModelNotInDatabaseError(f"{what} were stored under several names",
                                            hint=f"pass one key instead; {store.known_models_hint(hits)}")
    raise store.ModelNotInDatabaseError(
        f"no embeddings of {what} in this database",
        hint=f"run `modelport reid extract --model {value}` first; {store.known_models_hint(known)}")
