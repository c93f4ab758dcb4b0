"""Triton Inference Server model repositories: build (config from Triton's own schema), status, validate, clean;
and running them on the tritonserver of the nvidia-pytriton wheel."""

from modelport.triton.build import BuiltVersion, ModelEntry, build_model, build_repository, read_models_yaml
from modelport.triton.config import ConfigOptions, make_config, read_config, read_signature
from modelport.triton.repo import clean_repository, repository_status, validate_repository
from modelport.triton.server import TritonServer, TritonServerError, start_tritonserver

__all__ = ["BuiltVersion", "ConfigOptions", "ModelEntry", "build_model", "build_repository", "clean_repository",
           "make_config", "read_config", "read_models_yaml", "read_signature", "repository_status",
           "start_tritonserver", "TritonServer", "TritonServerError", "validate_repository"]
