"""Text-to-image and image-to-image search over a folder, with CLIP encoders and an index in a SQLite file or
a PostgreSQL database with pgvector."""

from modelport.search.encoders import Encoders, open_encoders
from modelport.search.index import IndexStats, index_folder
from modelport.search.query import Hit, search
from modelport.search.store import IndexMismatchError, IndexModel, IndexStore

__all__ = ["Encoders", "Hit", "IndexMismatchError", "IndexModel", "IndexStats", "IndexStore", "index_folder",
           "open_encoders", "search"]
