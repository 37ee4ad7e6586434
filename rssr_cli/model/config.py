"""The model's configuration: everything needed to rebuild a network and use it, stored in every weights file.

A :class:`ModelConfig` is a frozen value made of small frozen sections (architecture, normalisation, schedule, sampler
defaults). ``to_dict`` gives plain JSON types; ``from_dict`` validates and raises ``ValueError`` naming the bad field
(the weights loader turns that into a one-line :class:`~rssr_cli.errors.WeightsError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

__all__ = [
    "ARCHITECTURE",
    "ArchConfig",
    "ModelConfig",
    "Normalization",
    "CONSISTENCY_MODES",
    "Consistency",
    "Prediction",
    "SAMPLER_INITS",
    "MAX_TEXTURE",
    "CHROMA_BANDS",
    "MAX_CHROMA_SIGMA",
    "TEXTURE_SIGMA",
    "SamplerConfig",
    "SamplerInit",
    "ScheduleConfig",
]

#: Name and version of the network layout; a weights file with another value is refused rather than misread.
ARCHITECTURE = "rssr-prior-unet-v1"

Prediction = Literal["x0", "v", "eps"]
PREDICTIONS: tuple[str, ...] = ("x0", "v", "eps")
ScheduleKind = Literal["cosine", "linear"]
SCHEDULES: tuple[str, ...] = ("cosine", "linear")
LossKind = Literal["l1", "l2"]
LOSSES: tuple[str, ...] = ("l1", "l2")
Consistency = Literal["backproject", "exact", "none"]
CONSISTENCY_MODES: tuple[str, ...] = ("backproject", "exact", "none")
SamplerInit = Literal["bicubic", "estimate"]
SAMPLER_INITS: tuple[str, ...] = ("bicubic", "estimate")

#: The sampler's texture transfer: the finest scale kept from a sample (sigma of the Gaussian it subtracts, HR pixels;
#: chosen on the validation split, docs/model.md) and the largest gain accepted.
TEXTURE_SIGMA = 1.0
MAX_TEXTURE = 4.0
#: The sampler's chroma smoothing acts on these bands' colour (their deviations from their mean), when a model has at
#: least two of them; the largest sigma (HR pixels) accepted.
CHROMA_BANDS = ("B02", "B03", "B04")
MAX_CHROMA_SIGMA = 8.0


@dataclass(frozen=True)
class ArchConfig:
    """Widths of the conditional UNet and of the prior feature extractor, one entry per level.

    Both networks start with a pixel-unshuffle (space-to-depth) by ``unshuffle`` (u, a power of two >= 2): level 0
    works at 1/u of the HR grid, level k at 1/(u·2^k), and the output is pixel-shuffled back by u. A larger u runs the
    network on a coarser working grid, closer to the LR's information (an LR pixel is 12.5 HR pixels at 12.5×), so
    widths can grow at the same cost per HR pixel: ×2 width at ×2 unshuffle costs the same FLOPs with ×4 parameters.
    ``blocks[k]`` residual blocks per level on the way down (and the same on the way up); the deepest level also holds
    the middle blocks. ``prior_widths[k]`` is the width of the prior features injected at level k.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 2)
    prior_widths: tuple[int, ...] = (16, 32, 64)
    prior_blocks: tuple[int, ...] = (1, 1, 2)
    time_dim: int = 128
    unshuffle: int = 2

    def __post_init__(self) -> None:
        u = self.unshuffle
        if isinstance(u, bool) or not isinstance(u, int) or u < 2 or u & (u - 1):
            raise ValueError(f"arch: unshuffle must be a power of two >= 2 (2, 4, 8, ...), got {u!r}")
        levels = len(self.widths)
        if levels < 1 or any(len(x) != levels for x in (self.blocks, self.prior_widths, self.prior_blocks)):
            raise ValueError("arch: widths, blocks, prior_widths and prior_blocks need one entry per level")
        if min(self.widths + self.prior_widths + (self.time_dim,)) < 1 or min(self.blocks) < 1:
            raise ValueError("arch: widths and block counts must be positive")
        if min(self.prior_blocks) < 0:
            raise ValueError("arch: prior_blocks must be non-negative")

    @property
    def downsampling(self) -> int:
        """Total downsampling factor of the UNet, ``unshuffle · 2^(levels − 1)``: HR sizes are padded to a multiple of
        it inside ``forward``, and tile origins are aligned modulo it."""
        return self.unshuffle * 2 ** (len(self.widths) - 1)


@dataclass(frozen=True)
class Normalization:
    """Per-band statistics (reflectance) that map the data to the network's space.

    The conditioning image is ``(lr_up − mean) / std``; the diffusion variable x0 is the HR residual
    ``(hr − lr_up) / residual_std``. The residual has its own scale (a few hundredths of reflectance, versus about a
    tenth for the image) so that x0 has unit variance, as the noise schedule's signal-to-noise ratios assume.
    Defaults are typical Sentinel-2 L2A land values, placeholders that training replaces with its data's statistics.
    """

    mean: tuple[float, ...] = (0.08, 0.10, 0.11, 0.25)
    std: tuple[float, ...] = (0.06, 0.07, 0.09, 0.10)
    residual_std: tuple[float, ...] = (0.02, 0.02, 0.02, 0.025)

    def __post_init__(self) -> None:
        if not (len(self.mean) == len(self.std) == len(self.residual_std)):
            raise ValueError("normalization: mean, std and residual_std need one value per band")
        if min(self.std + self.residual_std) <= 0:
            raise ValueError("normalization: std and residual_std must be positive")


@dataclass(frozen=True)
class ScheduleConfig:
    """The forward process: ``timesteps`` (T) training steps and the shape of β_t."""

    timesteps: int = 1000
    kind: ScheduleKind = "cosine"

    def __post_init__(self) -> None:
        if self.timesteps < 2:
            raise ValueError("schedule: timesteps must be at least 2")
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule: kind must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")


@dataclass(frozen=True)
class SamplerConfig:
    """Default settings of the LR-start sampler, overridable per run (``--steps``, ``--start``, ``--eta``,
    ``--consistency``, ``--init``). See docs/model.md for why these values.

    ``consistency``: how the result is tied to the LR (:mod:`rssr_cli.degrade`): ``backproject`` (one step of
    ``x + U(lr − D x)``: band means and the 10 m content follow the LR to within its noise), ``exact``
    (``x + D⁺(lr − D x)``: ``D x == lr`` exactly, which pushes the LR's noise through the inverse of the blur), or
    ``none``. Files written before the modes existed store true/false, read as ``exact``/``none``.
    ``init``: the state the sampler starts from before noising to t0: ``bicubic`` (residual 0) or ``estimate`` (the
    network's own one-step estimate from pure noise, CCDF's "good initial estimate"; one more network evaluation).
    ``context``: LR pixels of context a tile needs, with exactly these settings, for its core to match a whole-image
    run to within 1e-5 reflectance (0.1 DN): measured when the weights were exported (scripts/export.py), usually far
    below the receptive-field bound that is used without it (None) or with other settings.
    ``texture``: None returns the sample as drawn. A gain g returns the network's one-step estimate (its
    minimum-error prediction; one more evaluation unless ``init`` is ``estimate``) plus g times the sample's finest
    texture, what the sample has beyond the estimate above :data:`TEXTURE_SIGMA` HR pixels
    (:func:`rssr_cli.diffusion.samplers.transfer_texture`): the distortion-perception knob, 0 = the estimate.
    ``chroma_sigma``: the colour of what the model adds over bicubic, in the visible bands (:data:`CHROMA_BANDS`), is
    blurred by a Gaussian of this many HR pixels while its brightness is kept (:func:`rssr_cli.filters.blur_chroma`):
    a 10 m pixel carries too little colour information for 0.8 m colour detail, so colour the network invents at
    the finest scales is speckle; real fine detail is mostly brightness (docs/model.md). 0 = off.
    """

    steps: int = 8
    start: float = 0.6
    eta: float = 0.0
    consistency: Consistency = "backproject"
    init: SamplerInit = "bicubic"
    context: int | None = None
    texture: float | None = None
    chroma_sigma: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.consistency, bool):
            object.__setattr__(self, "consistency", "exact" if self.consistency else "none")
        if self.consistency not in CONSISTENCY_MODES:
            raise ValueError(f"sampler: consistency must be one of {', '.join(CONSISTENCY_MODES)}, "
                             f"got {self.consistency!r}")
        if self.init not in SAMPLER_INITS:
            raise ValueError(f"sampler: init must be one of {', '.join(SAMPLER_INITS)}, got {self.init!r}")
        if self.steps < 1:
            raise ValueError("sampler: steps must be at least 1")
        if not 0.0 < self.start <= 1.0:
            raise ValueError("sampler: start must be in (0, 1]")
        if self.eta < 0:
            raise ValueError("sampler: eta must be non-negative")
        if self.context is not None and self.context < 0:
            raise ValueError("sampler: context must be non-negative")
        if self.texture is not None and not 0 <= self.texture <= MAX_TEXTURE:
            raise ValueError(f"sampler: texture must be in [0, {MAX_TEXTURE:g}], got {self.texture:g}")
        if not 0 <= self.chroma_sigma <= MAX_CHROMA_SIGMA:
            raise ValueError(f"sampler: chroma_sigma must be in [0, {MAX_CHROMA_SIGMA:g}], got {self.chroma_sigma:g}")

    @property
    def evaluations(self) -> int:
        """Network evaluations per sample: the DDIM steps, plus one for the one-step estimate (an ``estimate``
        start or a ``texture`` gain; computed once for both)."""
        return self.steps + (1 if self.uses_estimate else 0)

    @property
    def uses_estimate(self) -> bool:
        """Whether sampling needs the network's one-step estimate (``init = "estimate"`` or a ``texture`` gain)."""
        return self.init == "estimate" or self.texture is not None


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model: bands, scale, network, normalisation, diffusion, sampler defaults.

    ``prediction`` is what the network outputs for the normalised residual x0 (see :mod:`rssr_cli.model`): ``x0``
    (the default), ``v`` or ``eps``. ``loss`` is the training loss on that target.
    """

    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    scale: Fraction = Fraction(25, 2)
    arch: ArchConfig = field(default_factory=ArchConfig)
    normalization: Normalization = field(default_factory=Normalization)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    prediction: Prediction = "x0"
    loss: LossKind = "l1"
    architecture: str = ARCHITECTURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", Fraction(self.scale).limit_denominator(1000))
        object.__setattr__(self, "bands", tuple(self.bands))
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture {self.architecture!r} is not supported (this rssr reads {ARCHITECTURE})")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError("bands must be a non-empty list of distinct names")
        if len(self.normalization.mean) != len(self.bands):
            raise ValueError(f"normalization has {len(self.normalization.mean)} bands, config has {len(self.bands)}")
        if self.scale < 2:
            raise ValueError(f"scale must be at least 2, got {float(self.scale):g}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")

    @property
    def channels(self) -> int:
        return len(self.bands)

    @property
    def chroma_channels(self) -> tuple[int, ...]:
        """Indices of the :data:`CHROMA_BANDS` this model has: the channels whose colour ``chroma_sigma`` smooths
        (none unless at least two)."""
        found = tuple(self.bands.index(b) for b in CHROMA_BANDS if b in self.bands)
        return found if len(found) >= 2 else ()

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """A very small network (for tests and smoke runs on CPU): two levels, a few channels, T = 50."""
        bands = tuple(overrides.pop("bands", cls.bands))
        n = len(bands)
        base = dict(
            bands=bands,
            arch=ArchConfig(widths=(8, 16), blocks=(1, 1), prior_widths=(4, 8), prior_blocks=(1, 1), time_dim=16),
            normalization=Normalization(mean=(0.1,) * n, std=(0.05,) * n, residual_std=(0.02,) * n),
            schedule=ScheduleConfig(timesteps=50),
            sampler=SamplerConfig(steps=4, start=0.6),
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; the scale as a string fraction ("25/2") so it round-trips exactly; ``arch.unshuffle``
        only when it is not 2."""
        d = dataclasses.asdict(self)
        d["scale"] = str(self.scale)
        if self.arch.unshuffle == 2:
            # The layout every file had before the field existed: leave it out, so older rssr still reads such files
            # (and refuses, as an unknown field, a layout it cannot build).
            del d["arch"]["unshuffle"]
        for key in ("context", "texture"):
            if getattr(self.sampler, key) is None:
                del d["sampler"][key]  # likewise: files without these settings stay readable by older rssr
        if self.sampler.chroma_sigma == 0:
            del d["sampler"]["chroma_sigma"]
        d["bands"] = list(self.bands)
        return _lists(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`. Unknown keys are an error (a newer file must not be half-read)."""
        if not isinstance(d, dict):
            raise ValueError("config must be a JSON object")
        sections = {"arch": ArchConfig, "normalization": Normalization, "schedule": ScheduleConfig,
                    "sampler": SamplerConfig}
        kwargs: dict[str, Any] = {}
        _check_keys(d, cls, "config")
        try:
            for key, value in d.items():
                if key in sections:
                    if not isinstance(value, dict):
                        raise ValueError(f"config.{key} must be an object")
                    _check_keys(value, sections[key], f"config.{key}")
                    kwargs[key] = sections[key](**{k: _tuples(v) for k, v in value.items()})
                elif key == "scale":
                    kwargs[key] = Fraction(str(value))
                else:
                    kwargs[key] = _tuples(value)
            return cls(**kwargs)
        except (TypeError, ZeroDivisionError) as exc:
            raise ValueError(f"config: {exc}") from exc


def _check_keys(d: dict[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where} has unknown field(s): {', '.join(unknown)}")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
