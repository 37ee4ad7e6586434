"""The training loop: schedule, data order, augmentation, EMA, validation, checkpoints, exact resume, NaN guard."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from rssr_cli.errors import DataError, OutputError, TrainingError, UsageError
from rssr_cli.train.archive import PrepareOptions, prepare_archive
from rssr_cli.train.augment import dihedral, random_crop, random_dihedral
from rssr_cli.patches import save_cache
from rssr_cli.train.config import load_config
from rssr_cli.train.ema import EMA
from rssr_cli.train.loop import batch_indices, learning_rate, split_indices, train

DATA = Path(__file__).parent / "data"
SCALE = Fraction(25, 2)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    prepared = prepare_archive(DATA / "train_hr", options=PrepareOptions(patch=8, synthetic_lr=True,
                                                                           missing_band="mask"))
    return save_cache(prepared.cache, tmp_path_factory.mktemp("cache") / "p.npz")


def _config(cache_path: Path, out: Path, **kw):
    sets = {"data": str(cache_path), "out": str(out), "steps": 6, "batch_size": 2, "warmup": 2, "val_every": 3,
            "checkpoint_every": 3, "log_every": 1, "val_fraction": 0.3, "model.preset": "tiny", "device": "cpu"}
    sets.update(kw)
    return load_config(None, sets)


def test_learning_rate_schedule():
    cfg = load_config(None, {"steps": 100, "warmup": 10, "lr": 1.0, "min_lr_ratio": 0.1})
    rates = [learning_rate(s, cfg) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(0.1, abs=0.01)


def test_ranks_see_distinct_data_and_cover_each_epoch():
    n, batch, world = 24, 3, 4
    steps_per_epoch = n // (batch * world)
    seen = []
    for step in range(steps_per_epoch):
        per_rank = [set(batch_indices(n, step, batch, r, world, seed=5)) for r in range(world)]
        for a in range(world):
            for b in range(a + 1, world):
                assert not per_rank[a] & per_rank[b]
        for s in per_rank:
            seen.extend(s)
    assert sorted(seen) == list(range(n))
    # The next epoch is another permutation, and the order depends on the seed.
    assert list(batch_indices(n, steps_per_epoch, batch, 0, world, 5)) != list(batch_indices(n, 0, batch, 0, world, 5))
    assert list(batch_indices(n, 0, batch, 0, world, 5)) != list(batch_indices(n, 0, batch, 0, world, 6))


def test_source_balance_shares_draws_by_source_size():
    """A source's share of the draws is proportional to its patches ** balance; 1 keeps plain epochs."""
    import numpy as np

    from rssr_cli.train.data import source_weights

    pair = np.array([0] * 90 + [1] * 9 + [2])  # a big source, a small one, a single patch
    assert source_weights(pair, 1.0) is None
    for balance in (0.0, 0.5):
        weights = np.array(source_weights(pair, balance))
        shares = np.array([weights[pair == p].sum() for p in range(3)])
        expected = np.array([90.0, 9.0, 1.0]) ** balance
        np.testing.assert_allclose(shares, expected / expected.sum(), rtol=1e-12)
        # Within a source every patch is equally likely.
        assert np.ptp(weights[pair == 0]) == 0 and np.ptp(weights[pair == 1]) == 0
    # The draws follow the weights: with balance 0 the single patch is a third of them (it is 1 % without balance).
    weights = source_weights(pair, 0.0)
    drawn = np.concatenate([batch_indices(len(pair), s, 10, r, 2, 5, weights) for s in range(150) for r in range(2)])
    assert abs((pair[drawn] == 2).mean() - 1 / 3) < 0.03 and abs((pair[drawn] == 0).mean() - 1 / 3) < 0.03
    # Seeded and rank-dependent, like the plain order.
    assert list(batch_indices(100, 3, 10, 0, 2, 5, weights)) == list(batch_indices(100, 3, 10, 0, 2, 5, weights))
    assert list(batch_indices(100, 3, 10, 0, 2, 5, weights)) != list(batch_indices(100, 3, 10, 1, 2, 5, weights))


def test_split_is_disjoint_and_seeded():
    tr, va = split_indices(100, 0.1, seed=0)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert list(va) == list(split_indices(100, 0.1, seed=0)[1]) != list(split_indices(100, 0.1, seed=1)[1])
    assert len(split_indices(5, 0.01, 0)[1]) == 1 and len(split_indices(5, 0.0, 0)[1]) == 0


def test_augmentation_keeps_pairs_aligned():
    from rssr_cli.degrade import downsample

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 2, 100, 100, generator=g)
    lr = downsample(hr, SCALE)
    for k in range(8):
        assert torch.allclose(downsample(dihedral(hr, k), SCALE), dihedral(lr, k), atol=1e-5)
    lr_a, hr_a = random_dihedral(lr, hr, g)
    assert torch.allclose(downsample(hr_a, SCALE), lr_a, atol=1e-5)
    lr_c, hr_c = random_crop(lr_a, hr_a, 4, SCALE, g)
    assert lr_c.shape[-1] == 4 and hr_c.shape[-1] == 50
    # Interior LR pixels of a crop are the degraded HR crop's (the PSF reaches ~1 LR px beyond a pixel).
    assert torch.allclose(downsample(hr_c, SCALE)[..., 1:-1, 1:-1], lr_c[..., 1:-1, 1:-1], atol=0.05)
    with pytest.raises(ValueError):
        random_crop(lr, hr, 3, SCALE, g)


def test_ema_average():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1 -> 0.9
    assert float(ema.shadow["weight"]) == pytest.approx(0.9)
    ema.update(model)  # decay min(0.5, 2/11) -> 0.9 * 2/11 + 9/11
    assert float(ema.shadow["weight"]) == pytest.approx(0.9 * 2 / 11 + 9 / 11)
    target = torch.nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert float(target.weight.detach()) == pytest.approx(float(ema.shadow["weight"]))


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_writes_weights_with_provenance_and_metrics(cache_path, tmp_path):
    from rssr_cli.weights import load_weights

    result = train(_config(cache_path, tmp_path / "run"), command=["rssr", "train", "test"])
    loaded = load_weights(result.weights)
    prov = loaded.provenance
    assert prov["steps"] == 6 and prov["command"] == ["rssr", "train", "test"] and prov["data"] == str(cache_path)
    assert prov["synthetic_lr"] is True and "val_psnr" in prov["metrics"] and prov["weights"] == "EMA"
    assert prov["train_config"]["radiometric"] is False and prov["train_config"]["brightness"] == [0.6, 1.6]
    assert loaded.config.bands == ("B02", "B03", "B04", "B08") and loaded.config.scale == SCALE
    # Normalisation comes from the data, not the preset.
    assert loaded.config.normalization.mean[0] != pytest.approx(0.1)
    events = _events(tmp_path / "run")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("val") == 2 and kinds.count("train") == 6
    val = [e for e in events if e["kind"] == "val"][0]
    assert val["val_psnr_bicubic"] > 20 and "val_psnr_gain" in val
    with pytest.raises(OutputError, match="--resume"):
        train(_config(cache_path, tmp_path / "run"))


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("radiometric", [False, True])
def test_resume_after_interruption_gives_identical_weights(cache_path, tmp_path, monkeypatch, radiometric):
    import rssr_cli.train.data as data

    calls = []
    real = data.random_radiometry
    monkeypatch.setattr(data, "random_radiometry", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    full = tmp_path / "full"
    train(_config(cache_path, full, radiometric=radiometric))
    assert len(calls) == (6 if radiometric else 0)  # the radiometry is drawn every step when on, never when off

    class Interrupt(Exception):
        pass

    def stop_at_4(event):
        if event["kind"] == "train" and event["step"] == 4:
            raise Interrupt

    part = tmp_path / "part"
    with pytest.raises(Interrupt):
        train(_config(cache_path, part, radiometric=radiometric), progress=stop_at_4)
    assert _state(part)["step"] == 3
    train(_config(cache_path, part, radiometric=radiometric), resume=True)
    a, b = _state(full), _state(part)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # The log of the resumed run is the uninterrupted run's (steps after the checkpoint logged once).
    strip = lambda evs: [(e["kind"], e["step"], e.get("loss")) for e in evs if e["kind"] in ("train", "val")]
    assert strip(_events(full)) == strip(_events(part))


def test_resume_refuses_a_changed_batch(cache_path, tmp_path):
    train(_config(cache_path, tmp_path / "r", steps=3))
    with pytest.raises(UsageError, match="batch_size"):
        train(_config(cache_path, tmp_path / "r", steps=6, batch_size=3), resume=True)
    with pytest.raises(UsageError, match="source_balance was 1.0 .* now 0.5"):
        train(_config(cache_path, tmp_path / "r", steps=6, source_balance=0.5), resume=True)
    # A checkpoint written before source_balance existed trained with its default and resumes as such.
    state = _state(tmp_path / "r")
    del state["train_config"]["source_balance"]
    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    train(_config(cache_path, tmp_path / "r", steps=4), resume=True)
    assert _state(tmp_path / "r")["step"] == 4


def test_source_balance_reaches_the_data_order(cache_path, tmp_path, monkeypatch):
    import numpy as np

    import rssr_cli.train.loop as loop

    seen = []
    real = loop.batch_indices
    monkeypatch.setattr(loop, "batch_indices", lambda *a: seen.append(a[-1]) or real(*a))
    train(_config(cache_path, tmp_path / "plain", steps=2, val_every=5))
    assert seen and all(w is None for w in seen)
    seen.clear()
    train(_config(cache_path, tmp_path / "balanced", steps=2, val_every=5, source_balance=0.0))
    weights = np.array(seen[0])
    assert len(seen) == 2 and weights.sum() == pytest.approx(1.0)
    # The run's log says what each source got: equal shares with balance 0, shares by size without.
    balanced = [e for e in _events(tmp_path / "balanced") if e["kind"] == "start"][0]["source_shares"]
    plain = [e for e in _events(tmp_path / "plain") if e["kind"] == "start"][0]["source_shares"]
    assert set(balanced) == set(plain) and len(plain) >= 2 and all(name.endswith(".tif") for name in plain)
    assert sum(balanced.values()) == pytest.approx(1.0, abs=1e-4) == sum(plain.values())
    assert max(balanced.values()) - min(balanced.values()) < 1e-4 < max(plain.values()) - min(plain.values())
    with pytest.raises(UsageError, match="source_balance must be in"):
        _config(cache_path, tmp_path / "bad", source_balance=-0.1)


def test_resume_refuses_a_checkpoint_of_the_former_format(cache_path, tmp_path):
    # Format 1 seeded its random streams differently: its run cannot be continued exactly.
    (tmp_path / "old").mkdir()
    torch.save({"format": "rssr-checkpoint/1", "step": 3}, tmp_path / "old" / "checkpoint.pt")
    with pytest.raises(DataError, match="start the run over"):
        train(_config(cache_path, tmp_path / "old"), resume=True)


def test_nan_loss_stops_with_a_clear_message(cache_path, tmp_path, monkeypatch):
    import rssr_cli.diffusion as diffusion

    real = diffusion.diffusion_loss

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr(diffusion, "diffusion_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        train(_config(cache_path, tmp_path / "nan"))


@pytest.mark.slow
def test_init_fine_tunes_from_a_weights_file(cache_path, tmp_path):
    """init = WEIGHTS starts from those weights (architecture and normalisation included), not from random ones."""
    from rssr_cli.weights import load_weights

    first = load_weights(train(_config(cache_path, tmp_path / "first", steps=2)).weights)
    # A learning rate too small to move any weight: the fine-tuned EMA export must be the starting weights.
    init = str(tmp_path / "first" / "model.safetensors")
    with pytest.raises(UsageError, match="may only set loss; remove arch"):  # the architecture is the file's
        train(_config(cache_path, tmp_path / "refused", steps=1, init=init).replace(model={"arch": {"widths": [8]}}))
    tuned_path = train(_config(cache_path, tmp_path / "tuned", steps=1, lr=1e-30, weight_decay=0.0, seed=7,
                               init=init).replace(model={"loss": "l2"})).weights
    tuned = load_weights(tuned_path)
    assert tuned.config.arch == first.config.arch and tuned.config.loss == "l2" and first.config.loss == "l1"
    assert tuned.config.normalization == first.config.normalization
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    assert tuned.provenance["train_config"]["init"].endswith("model.safetensors")
    # Without init the same seed gives other weights: the check above can fail.
    fresh = load_weights(train(_config(cache_path, tmp_path / "fresh", steps=1, lr=1e-30, weight_decay=0.0,
                                       seed=7)).weights)
    assert any(not torch.allclose(fresh.model.state_dict()[n], v) for n, v in first.model.state_dict().items())


def test_sampler_focus_trains_at_the_samplers_steps(cache_path, tmp_path, monkeypatch):
    """sampler_focus = 1: every training step t is one the model's sampler evaluates; 0 (the default): uniform."""
    import rssr_cli.diffusion as diffusion
    from rssr_cli.weights import load_weights

    real, drawn = diffusion.diffusion_loss, []

    def spy(*args, t=None, **kwargs):
        drawn.append(t)
        return real(*args, t=t, **kwargs)

    monkeypatch.setattr(diffusion, "diffusion_loss", spy)
    model = {"preset": "tiny", "sampler": {"steps": 2, "start": 0.5, "init": "estimate"}}
    result = train(_config(cache_path, tmp_path / "focus", steps=3, batch_size=4, sampler_focus=1.0)
                   .replace(model=model))
    config = load_weights(result.weights).config
    schedule = diffusion.NoiseSchedule.from_config(config.schedule)
    expected = diffusion.lr_start_timesteps(schedule, steps=2, start=0.5, estimate=True)
    assert len(expected) == 3 and len(drawn) == 3
    assert set(torch.cat(drawn).tolist()) <= set(expected)
    drawn.clear()
    train(_config(cache_path, tmp_path / "uniform", steps=2).replace(model=model))
    assert drawn == [None, None]
    with pytest.raises(UsageError, match="sampler_focus must be in"):
        _config(cache_path, tmp_path / "bad", sampler_focus=1.5)


def test_init_refuses_weights_for_another_scale(cache_path, tmp_path):
    from rssr_cli.model import ModelConfig, build_model
    from rssr_cli.weights import save_weights

    config = ModelConfig.tiny().replace(scale=Fraction(10))
    other = tmp_path / "x10.safetensors"
    save_weights(other, build_model(config), config)
    with pytest.raises(UsageError, match="at x10, .* at x25/2"):
        train(_config(cache_path, tmp_path / "run", steps=1, init=str(other)).replace(model={}))
