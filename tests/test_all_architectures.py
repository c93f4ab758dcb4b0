"""Every zoo architecture exports to every format available here and matches PyTorch."""

from __future__ import annotations

import pytest
from conftest import calibrated_model, save_plain

from modelport.export import available_formats, export_all
from modelport.zoo import BuiltModel, build, get_entry, list_models

FORMATS = [f.id for f in available_formats()]


@pytest.mark.parametrize("arch", [n for n in list_models() if get_entry(n).task == "embed"])
def test_every_format_matches_pytorch(tmp_path, arch):
    model = calibrated_model(arch)
    dim = build(arch=arch, allow_random=True).entry.feature_dim
    weights = save_plain(model, tmp_path / f"{arch}_market1501.pt", dim, classes=751)
    built = build(weights)
    assert isinstance(built, BuiltModel) and built.spec.outputs[0].shape == ("batch", dim)
    results = export_all(weights, FORMATS, built=built)
    assert [r.format for r in results] == FORMATS and len(FORMATS) >= 3
    for result in results:
        assert result.ok, f"{arch} {result.format}: {result.error}"
        first = result.check.outputs[0]
        assert first.min_cosine >= 0.9999 and first.nn_agreement == 1.0
