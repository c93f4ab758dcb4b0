"""``modelport ui``: a local web dashboard over the library (listing, export, bench, Triton, packages, ReID)."""
