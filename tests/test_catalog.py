"""`modelport models` answers from data (modelport.catalog); the data matches the models it describes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelport.catalog import ZOO


def test_catalog_rows_match_the_registered_models():
    from modelport.zoo import get_entry, list_models

    assert [r.name for r in ZOO] == list_models()
    for row in ZOO:
        entry = get_entry(row.name)
        if row.family == "yolo11":
            pytest.importorskip("ultralytics")
        assert (row.family, row.task, row.feature_dim, row.input) == (
            entry.family, entry.task, entry.feature_dim, (3, entry.height, entry.width)), row.name
        assert row.params == entry.parameter_count(), row.name  # counted on the meta device


def test_models_listing_imports_no_framework():
    code = ("import sys, json\nfrom typer.testing import CliRunner\nfrom modelport.cli import app\n"
            "r = CliRunner().invoke(app, ['models', '--json'])\nassert r.exit_code == 0, r.output\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'ultralytics', 'open_clip')"
            " if m in sys.modules]\n"
            "print(json.dumps({'heavy': heavy, 'rows': len(json.loads(r.output))}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["rows"] >= len(ZOO)


def test_counting_a_detector_on_the_meta_device_leaves_ultralytics_usable():
    """Ultralytics keeps class-level tensors (the Detect head's anchors); imported under the meta device
    they stay meta tensors, and every later predict failed with "Cannot copy out of meta tensor"."""
    pytest.importorskip("ultralytics")
    code = """
import tempfile, warnings, pathlib
from modelport.zoo import get_entry
get_entry("yolo11n").parameter_count()
from modelport.detect.untrained import save_untrained
from modelport.detect.runner import UltralyticsReference
from modelport.detect.samples import street_scenes
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pt = save_untrained(pathlib.Path(tempfile.mkdtemp()) / "yolo11n.pt", seed=0, imgsz=160, calib_images=2)
    UltralyticsReference(pt, 160).detect(street_scenes(1, seed=0))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
