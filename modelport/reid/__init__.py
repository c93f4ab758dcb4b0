"""ReID application: a SQLite detections store, embeddings per model, identity clustering, HTML reports."""
