"""What the ReID scale benchmarks extract (reid_ray_extract.py, reid_scale_costs.py): the ONNX export of a
BatchNorm-calibrated random osnet_x0_25 and a SQLite store of the demo scene's detections (camera A), no
embeddings yet. Needs tests/ on sys.path (the seeded model)."""

from __future__ import annotations

from pathlib import Path


def demo_store(work: Path) -> tuple[Path, Path]:
    """(the ONNX artifact, the template store) written into ``work``; each arm copies the template."""
    from conftest import calibrated_model, save_plain

    from modelport.export import export
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    weights = save_plain(calibrated_model("osnet_x0_25"), work / "osnet_x0_25_bench.pt", 512)
    (artifact,) = export(weights, "onnx", out=work)
    scene = write_demo_data(work / "scene")
    template = work / "template.db"
    import_mot(template, scene.video, scene.detections)
    return artifact, template
