"""Training on paired archives: pairing and patch cutting, the training loop (DDP), EMA.

The patch cache the archive is cut into lives in :mod:`rssr_cli.patches` (evaluation reads it too).

Public names (imported lazily so that ``import rssr_cli.train`` stays cheap):

- :func:`prepare_archive` / :class:`PrepareOptions` / :class:`PrepareReport` (:mod:`.archive`): archive -> patches
  (:class:`NoPatchesError` when nothing is usable, with the report);
- :class:`TrainConfig`, :func:`load_config` (:mod:`.config`);
- :func:`train` / :class:`TrainResult` (:mod:`.loop`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare_archive": "archive",
    "PrepareOptions": "archive",
    "PrepareReport": "archive",
    "PreparedArchive": "archive",
    "NoPatchesError": "archive",
    "TrainConfig": "config",
    "load_config": "config",
    "train": "loop",
    "TrainResult": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rssr_cli.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rssr_cli.train.{module}"), name)
