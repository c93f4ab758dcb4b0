"""MobileCLIP image and text encoders through open_clip: build, re-parameterise, export and verify."""

from modelport.clip.model import ClipModel, build_clip, clip_models, clip_norm, is_clip_model

__all__ = ["ClipModel", "build_clip", "clip_models", "clip_norm", "export_clip", "is_clip_model"]


def __getattr__(name: str):
    # export pulls in the exporter stack; keep `import modelport.clip` light.
    if name == "export_clip":
        from modelport.clip.export import export_clip

        return export_clip
    raise AttributeError(name)
