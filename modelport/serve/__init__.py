"""A KServe v2 HTTP server for a Triton model repository (FastAPI + uvicorn), with dynamic batching."""

from modelport.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
