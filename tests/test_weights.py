"""The weights file: round trip, and one-line errors for missing, corrupt, truncated and mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import random_model
from rssr_cli.errors import WeightsError
from rssr_cli.model import ArchConfig, ModelConfig, SRModel, build_model
from rssr_cli.weights import (
    DEFAULT_WEIGHTS_NAME,
    default_weights_path,
    describe_weights,
    load_weights,
    read_config,
    save_weights,
)
from rssr_cli.atomic import _umask


pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROVENANCE = {"data": "tests", "steps": 0, "note": "randomly initialised, untrained"}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, SRModel]:
    model = random_model(ModelConfig.tiny(prediction="v"))
    return save_weights(tmp_path / "m.safetensors", model, model.config, PROVENANCE), model


def _one_line_error(path: Path, match: str) -> str:
    with pytest.raises(WeightsError, match=match) as info:
        load_weights(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip(saved: tuple[Path, SRModel]) -> None:
    path, model = saved
    loaded = load_weights(path)
    assert loaded.config == model.config
    assert loaded.provenance == PROVENANCE
    assert not loaded.model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    x = torch.randn(1, 4, 24, 24)
    lr_up = 0.1 + 0.05 * torch.rand(1, 4, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded.model(x, torch.tensor([7]), lr_up), model(x, torch.tensor([7]), lr_up))
    m, config, provenance = loaded  # tuple-style unpacking for callers that prefer it
    assert config.prediction == "v" and provenance["steps"] == 0
    assert loaded.name.startswith("m.safetensors@") and len(loaded.name) == len("m.safetensors@") + 12


def test_read_config_and_describe(saved: tuple[Path, SRModel]) -> None:
    path, model = saved
    assert read_config(path) == model.config.to_dict()
    info = describe_weights(path)
    json.dumps(info)  # JSON-able for `rssr info --json`
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["bands"] == ["B02", "B03", "B04", "B08"] and info["scale"] == 12.5
    assert info["config"]["sampler"]["steps"] == 4
    assert info["provenance"] == PROVENANCE
    assert info["format"] == "rssr-weights/1" and len(info["tensors_sha256"]) == 64


def test_save_is_atomic_and_leaves_no_temp_files(saved: tuple[Path, SRModel]) -> None:
    path, model = saved
    save_weights(path, model, model.config, {"again": True})
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # as open() would create it, not mkstemp's 0600
    assert load_weights(path).provenance == {"again": True}


def test_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "nope.safetensors")
    monkeypatch.setenv("RSSR_WEIGHTS", str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsError, match="pass --weights PATH, or use --method bicubic"):
        load_weights(None)
    monkeypatch.delenv("RSSR_WEIGHTS")
    assert default_weights_path().name == DEFAULT_WEIGHTS_NAME
    assert default_weights_path().parent.name == "weights"


def test_corrupt_tensor_bytes(saved: tuple[Path, SRModel]) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x40  # a flipped bit in the last tensor: the header is fine, the digest is not
    path.write_bytes(bytes(data))
    _one_line_error(path, "corrupt: its tensors do not match the checksum")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header"])
def test_unreadable_files(saved: tuple[Path, SRModel], damage: str) -> None:
    path, _ = saved
    data = path.read_bytes()
    broken = {
        "truncated": data[: len(data) * 2 // 3],
        "garbage": bytes(range(256)) * 8,
        "empty": b"",
        "header": data[:8] + b"{not json" + data[17:],
    }[damage]
    path.write_bytes(broken)
    _one_line_error(path, "not a readable weights file")


def _write(path: Path, tensors: dict[str, torch.Tensor], config_dict: dict, **extra: str) -> Path:
    from rssr_cli.weights import _tensor_digest

    metadata = {"format": "rssr-weights", "format_version": "1", "config": json.dumps(config_dict), "provenance": "{}",
                "tensors_sha256": _tensor_digest(tensors), **extra}
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_mismatched_architecture(tmp_path: Path) -> None:
    """Tensors from one architecture under another's config are refused, naming the first bad tensor."""
    small = build_model(ModelConfig.tiny())
    wider = ModelConfig.tiny(arch=ArchConfig(widths=(8, 24), blocks=(1, 1), prior_widths=(4, 8),
                                             prior_blocks=(1, 1), time_dim=16))
    tensors = {k: v.contiguous() for k, v in small.state_dict().items()}
    message = _one_line_error(_write(tmp_path / "a.safetensors", tensors, wider.to_dict()), "does not match")
    assert "shape" in message
    deeper = ModelConfig.tiny(arch=ArchConfig(widths=(8, 16), blocks=(1, 2), prior_widths=(4, 8),
                                              prior_blocks=(1, 1), time_dim=16))
    _one_line_error(_write(tmp_path / "b.safetensors", tensors, deeper.to_dict()),
                    r"missing \d+ tensor\(s\) \(e.g. unet.down_blocks.1.1")


def test_invalid_metadata(tmp_path: Path) -> None:
    tensors = {k: v.contiguous() for k, v in build_model(ModelConfig.tiny()).state_dict().items()}
    config = ModelConfig.tiny().to_dict()
    _one_line_error(_write(tmp_path / "v.safetensors", tensors, config, format_version="9"), "version '9'")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    _one_line_error(tmp_path / "plain.safetensors", "not an rssr weights file")
    _one_line_error(_write(tmp_path / "c.safetensors", tensors, {**config, "prediction": "noise"}),
                    "invalid model config: prediction")
    _one_line_error(_write(tmp_path / "j.safetensors", tensors, config, config="{oops"), "not valid JSON")
    nan = dict(tensors)
    nan["unet.out.bias"] = torch.full_like(tensors["unet.out.bias"], float("nan"))
    _one_line_error(_write(tmp_path / "n.safetensors", nan, config), "non-finite")
