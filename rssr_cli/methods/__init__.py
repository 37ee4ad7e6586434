"""Super-resolution methods and the registry that names them (``--method``).

A method is a pair: a frozen options dataclass (with a ``method`` name and a ``build()`` that returns the method) and
the :class:`~rssr_cli.methods.base.TileUpsampler` it builds. Each method owns its options, so adding one touches one
module and one line here:

- ``bicubic`` (:mod:`.bicubic`): :class:`BicubicOptions` -> :class:`BicubicUpsampler`;
- ``diffusion`` (:mod:`.diffusion`): :class:`DiffusionOptions` -> :class:`DiffusionUpsampler`, sampled by
  :func:`~rssr_cli.methods.diffusion.sample_tiles` (the one sampling function; evaluation and training validation
  call it too).

The diffusion module (torch, the model) is imported only when a diffusion method is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from rssr_cli.errors import UsageError
from rssr_cli.methods.base import DEFAULT_BANDS, DEFAULT_SCALE, MethodOptions, TileResult, TileUpsampler
from rssr_cli.methods.bicubic import BicubicOptions, BicubicUpsampler

__all__ = [
    "BicubicOptions", "BicubicUpsampler", "DEFAULT_BANDS", "DEFAULT_SCALE", "DiffusionOptions", "DiffusionUpsampler",
    "METHODS", "MethodOptions", "TileResult", "TileUpsampler", "method_options",
    "register_method",
]

#: Method name -> "module:OptionsClass" (loaded on first use).
_REGISTRY: dict[str, str] = {
    "diffusion": "rssr_cli.methods.diffusion:DiffusionOptions",
    "bicubic": "rssr_cli.methods.bicubic:BicubicOptions",
}

#: The registered method names, the default first (``click.Choice`` is built from it).
METHODS: tuple[str, ...] = tuple(_REGISTRY)


def register_method(options_class: type, *, path: str | None = None) -> None:
    """Make a method available by name: ``options_class`` is a frozen dataclass with a ``method`` class attribute
    and ``build() -> TileUpsampler``. (The CLI's ``--method`` choice is fixed at import; the Python API sees it.)"""
    global METHODS
    name = options_class.method
    _REGISTRY[name] = path or f"{options_class.__module__}:{options_class.__qualname__}"
    METHODS = tuple(_REGISTRY)


def options_class(name: str) -> type:
    """The options dataclass of the method called ``name``."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    module, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def method_options(name: str, **values: Any) -> MethodOptions:
    """The options of method ``name`` from a flat set of values (the CLI's flags). Values that are None, or that the
    method does not define, are left out, so the method's defaults apply."""
    cls = options_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in fields and v is not None})


def __getattr__(name: str) -> Any:
    # The diffusion method pulls in the model and the weights loader: only on first use.
    if name in ("DiffusionOptions", "DiffusionUpsampler", "sample_tiles"):
        from rssr_cli.methods import diffusion

        return getattr(diffusion, name)
    raise AttributeError(f"module 'rssr_cli.methods' has no attribute {name!r}")
