"""Real Sentinel-2 in training (rssr_cli.train.real_lr): valid crops, the radiometry loss, and the trainer's use."""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from rssr_cli.degrade import upsample
from rssr_cli.diffusion import NoiseSchedule
from rssr_cli.errors import UsageError
from rssr_cli.model import ModelConfig, build_model
from rssr_cli.train.archive import PrepareOptions, prepare_archive
from rssr_cli.patches import save_cache
from rssr_cli.train.config import load_config
from rssr_cli.train.loop import train
from rssr_cli.train.real_lr import BLOCK, RealScenes, hr_block, radiometry_loss

DATA = Path(__file__).parent / "data"
SCALE = Fraction(25, 2)


def _scene(h: int = 40, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.05 + 0.1 * rng.random((4, h, w))).astype(np.float32)


def test_crops_come_from_fully_valid_windows_only():
    image = _scene()
    valid = np.ones(image.shape[1:], dtype=bool)
    valid[20, 20] = False
    image[:, 20, 20] = 99.0  # what no crop may contain
    scenes = RealScenes([(image, valid)], crop=16)
    # 25 x 25 corners, less the 16 x 16 of them whose window holds (20, 20).
    assert len(scenes) == 25 * 25 - 16 * 16
    batch = scenes.batch(200, torch.Generator().manual_seed(0))
    assert batch.shape == (200, 4, 16, 16) and float(batch.max()) < 1.0
    again = scenes.batch(200, torch.Generator().manual_seed(0))
    assert torch.equal(batch, again)  # seeded


def test_scenes_without_a_valid_window_are_refused():
    image = _scene(12, 40)
    with pytest.raises(UsageError, match="no 16 x 16 px window"):
        RealScenes([(image, np.ones(image.shape[1:], dtype=bool))], crop=16)
    image = _scene()
    valid = np.zeros(image.shape[1:], dtype=bool)
    with pytest.raises(UsageError, match="fully valid"):
        RealScenes([(image, valid)], crop=16)


def test_block_on_the_hr_grid():
    assert hr_block(SCALE) == 50 and hr_block(Fraction(5, 2)) == 10
    with pytest.raises(UsageError, match="must be whole"):
        hr_block(SCALE, block=1)


class _Constant(torch.nn.Module):
    """A network whose x0 estimate is a constant residual (normalised units), whatever its input."""

    def __init__(self, config: ModelConfig, value: float) -> None:
        super().__init__()
        self.config = config
        self.value = value
        self.residual_std = torch.tensor(config.normalization.residual_std)[:, None, None]

    def forward(self, x_t, t, lr_up):
        return torch.full_like(x_t, self.value)

    def from_residual(self, x0, lr_up):
        return lr_up + x0 * self.residual_std


def test_radiometry_loss_measures_the_block_means_the_estimate_moves():
    config = ModelConfig.tiny()
    schedule = NoiseSchedule.from_config(config.schedule)
    lr = torch.from_numpy(_scene(16, 16))[None].repeat(2, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    steps = [schedule.timesteps - 1, 20]
    # Residual 0 is bicubic: its block means are the LR's up to interpolation, far below a shift's.
    base = float(radiometry_loss(_Constant(config, 0.0), schedule, lr, generator, steps=steps).means)
    up = upsample(lr, config.scale)
    side = hr_block(config.scale)
    expected = (torch.nn.functional.avg_pool2d(up, side) - torch.nn.functional.avg_pool2d(lr, BLOCK)).abs().mean()
    assert base == pytest.approx(float(expected) / 0.02, rel=1e-4) and base < 0.1
    # A residual of +0.5 everywhere moves every block mean by 0.5 (in residual units).
    shifted = radiometry_loss(_Constant(config, 0.5), schedule, lr, generator, steps=steps)
    assert float(shifted.means) == pytest.approx(0.5, abs=base + 1e-6) and shifted.detail is None


class _Pattern(_Constant):
    """A constant residual plus a pattern that averages to 0 over every 50 x 50 block (stripes of 25 px)."""

    def forward(self, x_t, t, lr_up):
        stripes = (torch.arange(x_t.shape[-1]) // 25 % 2 * 2 - 1).float()
        return torch.full_like(x_t, self.value) + stripes


def test_detail_term_sees_only_what_is_drawn_within_the_blocks():
    config = ModelConfig.tiny()
    schedule = NoiseSchedule.from_config(config.schedule)
    lr = torch.from_numpy(_scene(16, 16))[None]
    steps = [49, 20]
    run = lambda model, ref: radiometry_loss(model, schedule, lr, torch.Generator().manual_seed(0), steps=steps,
                                             reference=ref)
    # Another radiometry (a constant) is not detail: the term ignores it.
    assert float(run(_Constant(config, 0.5), _Constant(config, 0.0)).detail) == pytest.approx(0, abs=1e-6)
    # Stripes drawn by one network and not by the other are: |±1| everywhere; the block means agree.
    loss = run(_Pattern(config, 0.0), _Constant(config, 0.0))
    assert float(loss.detail) == pytest.approx(1.0, abs=1e-5)
    assert float(loss.means) == pytest.approx(float(run(_Constant(config, 0.0), None).means), abs=1e-5)


def test_radiometry_loss_trains_the_network():
    torch.manual_seed(0)
    config = ModelConfig.tiny()
    model = build_model(config)
    schedule = NoiseSchedule.from_config(config.schedule)
    lr = torch.from_numpy(_scene(16, 16))[None]
    loss = radiometry_loss(model, schedule, lr, torch.Generator().manual_seed(0), steps=[49, 20]).means
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    prepared = prepare_archive(DATA / "train_hr", options=PrepareOptions(patch=8, synthetic_lr=True,
                                                                           missing_band="mask"))
    return save_cache(prepared.cache, tmp_path_factory.mktemp("cache") / "p.npz")


@pytest.fixture(scope="module")
def real_scene(tmp_path_factory) -> Path:
    """A 4-band uint16 DN file with no georeferencing: training reads pixels only."""
    path = tmp_path_factory.mktemp("real") / "s2.tif"
    dn = (_scene(40, 40) * 10000).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=4, dtype="uint16") as ds:
            ds.write(dn)
            ds.descriptions = ("B02", "B03", "B04", "B08")
    return path


def _config(cache_path: Path, out: Path, **kw):
    sets = {"data": str(cache_path), "out": str(out), "steps": 4, "batch_size": 2, "warmup": 2, "val_every": 4,
            "checkpoint_every": 2, "log_every": 1, "val_fraction": 0.3, "model.preset": "tiny", "device": "cpu"}
    sets.update(kw)
    return load_config(None, sets)


def test_training_with_real_scenes_logs_the_radiometry_loss(cache_path, real_scene, tmp_path, monkeypatch):
    import rssr_cli.train.loop as loop

    calls = []
    real = loop.radiometry_loss
    monkeypatch.setattr(loop, "radiometry_loss", lambda *a, **kw: calls.append(a[2].shape) or real(*a, **kw))
    out = tmp_path / "run"
    first = train(_config(cache_path, out, real_lr=[str(real_scene)], real_lr_weight=1.0, real_lr_batch=3,
                          real_lr_anchor=0.0))
    assert calls == [(3, 4, 16, 16)] * 4
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [e for e in events if e["kind"] == "train"]
    assert len(trained) == 4 and all(np.isfinite(e["real_lr_loss"]) for e in trained)
    assert all("real_lr_detail" not in e for e in trained)  # no reference network without init
    # Resuming with another weight would not continue the same run.
    with pytest.raises(UsageError, match="real_lr_weight was 1.0 .* now 0.5"):
        train(_config(cache_path, out, steps=6, real_lr=[str(real_scene)], real_lr_weight=0.5, real_lr_anchor=0.0),
              resume=True)
    # Fine-tuning: the init network is the reference whose detail is kept.
    tuned = tmp_path / "tuned"
    train(_config(cache_path, tuned, steps=2, real_lr=[str(real_scene)], real_lr_weight=1.0,
                  init=str(first.weights)).replace(model={}))
    events = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    details = [e["real_lr_detail"] for e in events if e["kind"] == "train"]
    assert len(details) == 2 and all(np.isfinite(details))
    # Off (the default): no real scenes read, no extra loss.
    calls.clear()
    plain = tmp_path / "plain"
    train(_config(cache_path, plain, steps=2))
    assert calls == []
    assert "real_lr_loss" not in json.loads((plain / "metrics.jsonl").read_text().splitlines()[2])


def test_bad_real_scene_settings_are_clear(cache_path, real_scene, tmp_path):
    with pytest.raises(UsageError, match="real_lr_weight > 0 needs real_lr"):
        _config(cache_path, tmp_path / "a", real_lr_weight=1.0)
    with pytest.raises(UsageError, match="real_lr_anchor > 0 keeps the detail .* set init"):
        _config(cache_path, tmp_path / "a", real_lr=[str(real_scene)], real_lr_weight=1.0)
    with pytest.raises(UsageError, match="real_lr_bidx must be 1-based"):
        _config(cache_path, tmp_path / "b", real_lr=[str(real_scene)], real_lr_bidx=[0, 1, 2, 3])
    with pytest.raises(UsageError, match=r"real_lr = .*missing\.tif"):
        train(_config(cache_path, tmp_path / "c", real_lr=[str(tmp_path / "missing.tif")], real_lr_weight=1.0,
                      real_lr_anchor=0.0))
