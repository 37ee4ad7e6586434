"""scripts/grow_model.py: a grown network computes exactly what the trained one did, and a block count below a
level's current one is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rssr_cli.model import ArchConfig, ModelConfig
from rssr_cli.weights import load_weights, save_weights

from conftest import random_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "grow_model.py"
ARCH = ArchConfig(widths=(8, 16), blocks=(1, 1), prior_widths=(4, 8), prior_blocks=(1, 1), time_dim=16, unshuffle=4)


def _grow_module():
    spec = importlib.util.spec_from_file_location("grow_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grown_model_computes_the_same_function(tmp_path: Path) -> None:
    # Every parameter random, so that a new block that is not an identity, or a tensor copied to the wrong place,
    # changes the output.
    trained = random_model(ModelConfig.tiny(arch=ARCH), seed=3)
    save_weights(tmp_path / "trained.safetensors", trained)
    _grow_module().grow(str(tmp_path / "trained.safetensors"), str(tmp_path / "grown.safetensors"), (2, 3))

    grown = load_weights(tmp_path / "grown.safetensors")
    assert grown.config.arch.blocks == (2, 3)
    assert grown.provenance["previous_blocks"] == [1, 1]
    n_old = sum(p.numel() for p in trained.parameters())
    assert sum(p.numel() for p in grown.model.parameters()) > n_old
    g = torch.Generator().manual_seed(0)
    x, lr_up = (torch.randn(2, 4, 24, 40, generator=g) for _ in range(2))
    with torch.no_grad():
        before, after = trained(x, torch.tensor([5, 900]), lr_up), grown.model(x, torch.tensor([5, 900]), lr_up)
    assert before.abs().mean() > 0.1
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_fewer_blocks_are_refused(tmp_path: Path) -> None:
    save_weights(tmp_path / "trained.safetensors", random_model(ModelConfig.tiny(arch=ARCH)))
    with pytest.raises(SystemExit, match="each >= the current"):
        _grow_module().grow(str(tmp_path / "trained.safetensors"), str(tmp_path / "out.safetensors"), (2, 0))
    assert not (tmp_path / "out.safetensors").exists()
