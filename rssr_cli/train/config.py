"""Training configuration: a frozen :class:`TrainConfig` read from TOML, with ``section.key=value`` overrides.

A config file has up to three tables (see ``examples/train.toml``)::

    [train]    # TrainConfig fields: data, out, steps, batch_size, lr, ...
    [model]    # the model: preset = "default" | "tiny", then any ModelConfig field (arch, schedule, sampler, ...)
    [prepare]  # PrepareOptions, used when `data` is an archive rather than a patch cache

Command-line overrides use the same names: ``--set lr=1e-4`` (a [train] key), ``--set model.arch.widths=[16,32]``,
``--set prepare.patch=24``. Values are TOML literals (``true``, ``[1, 2]``, ``"text"``); bare words are strings.
Why TOML: Python 3.11 reads it without a new dependency (``tomllib``), and it has real types (no YAML ``no`` -> False).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rssr_cli.errors import UsageError


_INT = (int,)
_FLOAT = (int, float)
#: Expected types of the scalar fields (a TOML/--set typo such as steps="1e4" is reported, not crashed on).
_TYPES: dict[str, tuple[type, ...]] = {
    "data": (str,), "out": (str,), "device": (str,), "steps": _INT, "batch_size": _INT, "crop": _INT,
    "lr": _FLOAT, "weight_decay": _FLOAT, "warmup": _INT, "min_lr_ratio": _FLOAT, "grad_clip": _FLOAT,
    "ema_decay": _FLOAT, "amp": (bool,), "augment": (bool,), "fresh_degradation": (bool,),
    "normalize_from_data": (bool,), "val_fraction": _FLOAT, "val_every": _INT, "val_max_patches": _INT,
    "val_steps": _INT, "checkpoint_every": _INT, "log_every": _INT, "seed": _INT, "betas": (list, tuple),
    "model": (dict,), "prepare": (dict,), "radiometric": (bool,), "brightness": (list, tuple),
    "spectral_gain": _FLOAT, "haze": _FLOAT, "band_offset": _FLOAT, "init": (str,),
    "sampler_focus": _FLOAT, "source_balance": _FLOAT, "real_lr": (list, tuple), "real_lr_bidx": (list, tuple),
    "real_lr_weight": _FLOAT, "real_lr_batch": _INT, "real_lr_anchor": _FLOAT,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data itself. Batch size is per process (per GPU under torchrun)."""

    data: str = ""
    out: str = "runs/rssr"
    steps: int = 20000
    batch_size: int = 16
    crop: int | None = None
    lr: float = 2e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 500
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    amp: bool = True
    augment: bool = True
    fresh_degradation: bool = True
    # Radiometric augmentation (rssr_cli.train.augment.random_radiometry): off by default, so existing configs train
    # as before. The ranges are RadiometryRanges's defaults.
    radiometric: bool = False
    brightness: tuple[float, float] = (0.6, 1.6)
    spectral_gain: float = 0.1
    haze: float = 0.04
    band_offset: float = 0.005
    normalize_from_data: bool = True
    val_fraction: float = 0.05
    val_every: int = 1000
    val_max_patches: int = 64
    val_steps: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    # Fine-tuning: a weights file (rssr train's model.safetensors, or the shipped model) to start from instead of
    # random weights. Its architecture and normalisation are used ([model] may only set `loss`); the optimiser starts
    # fresh.
    init: str | None = None
    # The fraction of each batch trained at the steps the model's own sampler evaluates (its [model.sampler]; with
    # init, the weights' shipped sampler), the rest at steps drawn uniformly. 0 = uniform, as in pre-training.
    sampler_focus: float = 0.0
    # How often each source (one HR image of the archive) is drawn: its share of the batches is proportional to its
    # patches ** source_balance. 1 = every patch equally (a large source dominates), 0 = every source equally.
    source_balance: float = 1.0
    # Real Sentinel-2 scenes without HR (rssr_cli.train.real_lr): each step also trains on real_lr_batch crops of
    # them to keep the LR's means over 40 m blocks, weighted by real_lr_weight (0 = off), and (real_lr_anchor > 0,
    # which needs init) to draw within those blocks what the init network draws. real_lr_bidx picks their bands in
    # model order (1-based), as `rssr upscale -b` does; without it they are identified from the files.
    real_lr: tuple[str, ...] = ()
    real_lr_bidx: tuple[int, ...] | None = None
    real_lr_weight: float = 0.0
    real_lr_batch: int = 4
    real_lr_anchor: float = 1.0
    model: Mapping[str, Any] = field(default_factory=dict)
    prepare: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kinds in _TYPES.items():
            value = getattr(self, name)
            if value is None and name in ("crop", "val_steps", "init", "real_lr_bidx"):
                continue
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                expected = " or ".join(k.__name__ for k in kinds)
                raise UsageError(f"training config: {name} must be {expected}, got {value!r}")
        if isinstance(self.steps, float) or isinstance(self.batch_size, float):
            raise UsageError("training config: steps and batch_size must be whole numbers")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "real_lr", tuple(self.real_lr))
        if self.real_lr_bidx is not None:
            object.__setattr__(self, "real_lr_bidx", tuple(self.real_lr_bidx))
        if len(self.brightness) != 2 or not all(isinstance(v, _FLOAT) and not isinstance(v, bool)
                                                for v in self.brightness):
            raise UsageError(f"training config: brightness must be two numbers [low, high], got {self.brightness!r}")
        object.__setattr__(self, "brightness", tuple(float(v) for v in self.brightness))
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (self.warmup >= 0, "warmup must be non-negative"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (self.grad_clip > 0, "grad_clip must be positive"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1 and self.checkpoint_every >= 1 and self.log_every >= 1,
             "val_every, checkpoint_every and log_every must be at least 1"),
            (self.crop is None or self.crop >= 1, "crop must be at least 1 LR pixel"),
            (len(self.betas) == 2, "betas must be two numbers"),
            (0 < self.brightness[0] <= self.brightness[1] < math.inf,
             f"brightness must be [low, high] with 0 < low <= high, got {list(self.brightness)}"),
            (0 <= self.spectral_gain < 1, f"spectral_gain must be in [0, 1), got {self.spectral_gain!r}"),
            (0 <= self.haze < 1, f"haze must be in [0, 1) (reflectance), got {self.haze!r}"),
            (0 <= self.sampler_focus <= 1, f"sampler_focus must be in [0, 1], got {self.sampler_focus!r}"),
            (0 <= self.source_balance <= 1, f"source_balance must be in [0, 1], got {self.source_balance!r}"),
            (0 <= self.band_offset < 1, f"band_offset must be in [0, 1) (reflectance), got {self.band_offset!r}"),
            (all(isinstance(p, str) for p in self.real_lr), "real_lr must be a list of file paths"),
            (self.real_lr_bidx is None or all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                                              for b in self.real_lr_bidx),
             f"real_lr_bidx must be 1-based band numbers, got {self.real_lr_bidx!r}"),
            (self.real_lr_weight >= 0, f"real_lr_weight must be non-negative, got {self.real_lr_weight!r}"),
            (self.real_lr_batch >= 1, f"real_lr_batch must be at least 1, got {self.real_lr_batch!r}"),
            (self.real_lr_weight == 0 or self.real_lr, "real_lr_weight > 0 needs real_lr scenes"),
            (self.real_lr_anchor >= 0, f"real_lr_anchor must be non-negative, got {self.real_lr_anchor!r}"),
            (self.real_lr_weight == 0 or self.real_lr_anchor == 0 or self.init is not None,
             "real_lr_anchor > 0 keeps the detail of the network a run starts from: set init (--init), or "
             "real_lr_anchor = 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"training config: {message}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["brightness"] = list(self.brightness)
        d["real_lr"] = list(self.real_lr)
        d["real_lr_bidx"] = None if self.real_lr_bidx is None else list(self.real_lr_bidx)
        d["model"] = dict(self.model)
        d["prepare"] = dict(self.prepare)
        return d


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def parse_value(text: str) -> Any:
    """A TOML literal (``1e-4``, ``true``, ``[16, 32]``, ``"x"``), or the bare text when it is not one."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Read ``path`` (TOML; None for defaults) and apply ``overrides``: ``"key=value"`` strings (values parsed as
    TOML literals) or a mapping of dotted keys to typed values. Unknown keys are a :class:`UsageError` naming the key (a typo must not be silently ignored)."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            tree = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {p} is not valid TOML: {exc}") from None
    unknown_tables = set(tree) - {"train", "model", "prepare"}
    if unknown_tables:
        raise UsageError(f"config file: unknown table(s) {', '.join(sorted(unknown_tables))}; use [train], [model], "
                         "[prepare]")
    # A mapping holds typed values (kept as they are); "KEY=VALUE" strings are parsed as TOML literals.
    items = (list(overrides.items()) if isinstance(overrides, Mapping)
             else [(k, parse_value(v)) for k, v in (split_override(o) for o in overrides)])
    for key, value in items:
        dotted = key if key.split(".")[0] in ("train", "model", "prepare") else f"train.{key}"
        _set(tree, dotted, value)
    train = dict(tree.get("train", {}))
    unknown = set(train) - _FIELDS - {"model", "prepare"}
    if unknown:
        raise UsageError(f"config: unknown training option(s) {', '.join(sorted(unknown))}")
    train["model"] = dict(tree.get("model", {}))
    train["prepare"] = dict(tree.get("prepare", {}))
    try:
        return TrainConfig(**train)
    except TypeError as exc:
        raise UsageError(f"config: {exc}") from None


def split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE (e.g. lr=1e-4 or model.arch.widths=[16,32])")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def model_config(spec: Mapping[str, Any], bands: Sequence[str], scale: Any):
    """The :class:`~rssr_cli.model.ModelConfig` a [model] table describes, for the data's bands and scale.

    ``preset = "tiny"`` starts from :meth:`ModelConfig.tiny` (tests, CPU smoke runs), anything else from the
    defaults; the other keys are ModelConfig fields (sections as nested tables) and override the preset's.
    """
    from fractions import Fraction

    from rssr_cli.model import ModelConfig

    spec = dict(spec)
    preset = spec.pop("preset", "default")
    if preset not in ("default", "tiny"):
        raise UsageError(f"model.preset must be 'default' or 'tiny', got {preset!r}")
    for key in ("bands", "scale"):
        if key in spec:
            raise UsageError(f"model.{key} comes from the training data; remove it from the config")
    n = len(bands)
    base = ModelConfig.tiny(bands=tuple(bands)) if preset == "tiny" else ModelConfig(
        bands=tuple(bands), normalization=_default_norm(n))
    d = base.to_dict()
    d["scale"] = str(Fraction(scale))
    for key, value in spec.items():
        if isinstance(value, Mapping) and isinstance(d.get(key), dict):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    try:
        return ModelConfig.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"model config: {exc}") from None


def _default_norm(n: int):
    from rssr_cli.model import Normalization

    base = Normalization()
    if n == len(base.mean):
        return base
    return Normalization(mean=(0.1,) * n, std=(0.07,) * n, residual_std=(0.02,) * n)
