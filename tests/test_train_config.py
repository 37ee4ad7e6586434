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


def test_mapping_overrides_are_not_reparsed():
    cfg = load_config(None, {"data": "2020", "out": "true"})
    assert cfg.data == "2020" and cfg.out == "true"


@pytest.mark.parametrize("override", ['steps="many"', "amp=1", "lr=[1]", "data=3"])
def test_wrong_types_are_named(override):
    with pytest.raises(UsageError, match=override.split("=")[0] + " must be"):
        load_config(None, [override])
