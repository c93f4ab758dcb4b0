"""The zoo's re-id architectures match torchreid 0.2.5 in state-dict layout and eval-mode numerics."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from modelport.zoo.registry import create_model, get_entry, list_models

DATA = Path(__file__).parent / "data" / "zoo"
MANIFEST = DATA / "torchreid_state_dict_manifest.json"
SYNTHETIC = DATA / "torchreid_synthetic_outputs.pt"
OSNET_CKPT = DATA / "osnet_x0_25_reference.pt"

# name -> (family, embedding dimension)
EXPECTED = {
    "osnet_x1_0": ("osnet", 512),
    "osnet_x0_75": ("osnet", 512),
    "osnet_x0_5": ("osnet", 512),
    "osnet_x0_25": ("osnet", 512),
    "resnet50": ("resnet", 2048),
    "densenet121": ("densenet", 1024),
    "mobilenetv2_x1_0": ("mobilenet", 1280),
}
FEATURE_DIMS = {name: dim for name, (_, dim) in EXPECTED.items()}
NAMES = sorted(EXPECTED)
INPUT_SHAPE = (2, 3, 256, 128)


def reference_input(seed: int = 0) -> torch.Tensor:
    """The fixed 2x3x256x128 input the reference outputs were computed on (explicit CPU generator)."""
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def synthetic_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Deterministic, non-trivial weights derived from each key's name alone.

    Both this test and the script that ran torchreid fill every tensor from a generator seeded
    with the key's CRC32, so the reference needs no stored weights and does not depend on
    construction or init order. Scales keep activations O(1) through 50+ layers without BN
    calibration: fan-in normal convs, BN affine near identity, running stats near (0, 1).
    """
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = torch.tensor(7, dtype=torch.long)
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if leaf == "weight" and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
        elif leaf in ("weight", "running_var"):
            out[key] = 0.75 + 0.5 * torch.rand(shape, generator=g)
        else:  # bias, running_mean
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def _manifest() -> dict[str, dict[str, list[int]]]:
    return json.loads(MANIFEST.read_text())["models"]


def test_registry_has_every_family_with_its_dimension() -> None:
    assert set(NAMES) <= set(list_models())
    for name, (family, dim) in EXPECTED.items():
        assert (get_entry(name).family, get_entry(name).feature_dim) == (family, dim)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_torchreid_manifest(name: str) -> None:
    expected = _manifest()[name]
    ours = {k: list(v.shape) for k, v in create_model(name).state_dict().items()}
    assert list(ours) == list(expected)
    assert ours == expected
    assert not any(k.startswith("classifier.") for k in ours)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_trace_and_input_dependence(name: str) -> None:
    model = create_model(name)
    # Half resolution keeps this cheap; every net still ends on a feature map of at least 4x2.
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, FEATURE_DIMS[name])
        assert torch.isfinite(y).all()
        # Two different images must give two different embeddings.
        assert not torch.allclose(y[0], y[1])
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), y)
        # The traced graph must not have baked in the batch size.
        assert traced(x[:1]).shape == (1, FEATURE_DIMS[name])


def test_train_mode_returns_features_not_logits() -> None:
    model = create_model("osnet_x0_25").train()
    assert model(reference_input(2)).shape == (2, 512)


def test_osnet_x0_25_loads_torchreid_trainer_checkpoint() -> None:
    ref = torch.load(OSNET_CKPT, map_location="cpu", weights_only=True)
    checkpoint = ref["checkpoint"]
    assert checkpoint["epoch"] == 10
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    assert any(k.startswith("classifier.") for k in state)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model = create_model("osnet_x0_25")
    model.load_state_dict(state, strict=True)
    x = reference_input(ref["seed"])
    assert float(x.sum()) == pytest.approx(ref["input_sum"], abs=1e-3)
    with torch.no_grad():
        y = model(x)
    # Same scale-relative tolerance as below: CI's CPU sums in another BLAS order (1.5e-5 seen on outputs ~6).
    atol = 1e-5 * max(1.0, float(ref["output"].abs().max()))
    torch.testing.assert_close(y, ref["output"], rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_eval_output_matches_torchreid_with_synthetic_weights(name: str) -> None:
    ref = torch.load(SYNTHETIC, map_location="cpu", weights_only=True)
    model = create_model(name)
    model.load_state_dict(synthetic_state_dict(_manifest()[name]), strict=True)
    x = reference_input(ref["seed"])
    assert float(x.sum()) == pytest.approx(ref["input_sum"], abs=1e-3)
    with torch.no_grad():
        y = model(x)
    expected = ref["outputs"][name]
    # Outputs are O(1); a scale-relative atol absorbs BLAS summation-order differences across CPUs.
    atol = 1e-5 * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", ["osnet_x0_25", "resnet50", "yolo11n"])
def test_parameter_counts_on_the_meta_device_equal_the_built_models(name):
    """`modelport models` counts parameters without building weights; the counts must be the real ones."""
    from modelport.zoo import create_model, get_entry, list_models

    if name not in list_models():
        pytest.skip(f"{name} needs an optional extra that is not installed")
    assert get_entry(name).parameter_count() == sum(p.numel() for p in create_model(name).parameters())
