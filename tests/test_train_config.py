"""Training config: TOML tables, command-line overrides, validation, model presets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rssr_cli.errors import UsageError
from rssr_cli.train.config import TrainConfig, load_config, model_config, parse_value

EXAMPLE = Path(__file__).parent.parent / "examples" / "train.toml"


def test_example_config_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.data and cfg.steps > 0 and cfg.model.get("preset") == "default"
    assert cfg.prepare["missing_band"] == "mask"
    mc = model_config(cfg.model, ("B02", "B03", "B04", "B08"), Fraction(25, 2))
    assert mc.scale == Fraction(25, 2)


def test_overrides_take_precedence(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nsteps = 100\nlr = 1e-3\n[model]\npreset = "tiny"\n[prepare]\npatch = 16\n')
    cfg = load_config(p, ["steps=7", "model.arch.widths=[4, 8]", "prepare.patch=24", 'out="x y"', "device=cpu"])
    assert cfg.steps == 7 and cfg.lr == 1e-3 and cfg.out == "x y" and cfg.device == "cpu"
    assert cfg.model == {"preset": "tiny", "arch": {"widths": [4, 8]}}
    assert cfg.prepare == {"patch": 24}
    mc = model_config(cfg.model, ("B02", "B03", "B04"), Fraction(25, 2))
    assert mc.arch.widths == (4, 8) and mc.channels == 3 and mc.schedule.timesteps == 50


def test_parse_value():
    assert parse_value("1e-4") == 1e-4 and parse_value("true") is True and parse_value("[1,2]") == [1, 2]
    assert parse_value("cuda:1") == "cuda:1"


@pytest.mark.parametrize("override, message", [
    (["stpes=3"], "unknown training option"),
    (["steps=0"], "steps must be at least 1"),
    (["noequals"], "KEY=VALUE"),
    (["ema_decay=1.0"], "ema_decay"),
    (["brightness=[1.6, 0.6]"], r"brightness must be \[low, high\] with 0 < low <= high, got \[1.6, 0.6\]"),
    (["brightness=[0, 1.6]"], "brightness must be"),
    (["brightness=[1.0]"], "brightness must be two numbers"),
    (["brightness=1.2"], "brightness must be list"),
    (["spectral_gain=1.5"], r"spectral_gain must be in \[0, 1\)"),
    (["haze=-0.01"], "haze must be in"),
    (["band_offset=-0.005"], "band_offset must be in"),
    (["radiometric=1"], "radiometric must be bool"),
])
def test_bad_values_are_usage_errors(override, message):
    with pytest.raises(UsageError, match=message):
        load_config(None, override)


def test_bad_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "tables.toml").write_text("[optim]\nlr = 1\n")
    with pytest.raises(UsageError, match="unknown table"):
        load_config(tmp_path / "tables.toml")


def test_model_bands_come_from_data():
    with pytest.raises(UsageError, match="comes from the training data"):
        model_config({"bands": ["B02"]}, ("B02",), 12.5)
    with pytest.raises(UsageError, match="preset"):
        model_config({"preset": "huge"}, ("B02",), 12.5)
    with pytest.raises(UsageError, match="model config"):
        model_config({"prediction": "magic"}, ("B02", "B03", "B04", "B08"), Fraction(25, 2))


def test_defaults_are_valid():
    assert TrainConfig().to_dict()["betas"] == [0.9, 0.99]


def test_radiometric_augmentation_is_off_by_default_and_recorded(tmp_path):
    d = TrainConfig().to_dict()
    assert d["radiometric"] is False and d["brightness"] == [0.6, 1.6]
    assert (d["spectral_gain"], d["haze"], d["band_offset"]) == (0.1, 0.04, 0.005)
    p = tmp_path / "c.toml"
    p.write_text("[train]\nradiometric = true\nbrightness = [0.8, 1.25]\nhaze = 0.02\n")
    cfg = load_config(p, ["band_offset=0"])
    assert cfg.radiometric and cfg.brightness == (0.8, 1.25) and cfg.haze == 0.02 and cfg.band_offset == 0
    assert cfg.to_dict()["brightness"] == [0.8, 1.25]


def test_mapping_overrides_are_not_reparsed():
    cfg = load_config(None, {"data": "2020", "out": "true"})
    assert cfg.data == "2020" and cfg.out == "true"


@pytest.mark.parametrize("override", ['steps="many"', "amp=1", "lr=[1]", "data=3"])
def test_wrong_types_are_named(override):
    with pytest.raises(UsageError, match=override.split("=")[0] + " must be"):
        load_config(None, [override])
