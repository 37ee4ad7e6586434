"""Training on paired archives: pairing and patch cutting, the patch cache, the training loop (DDP), EMA.

Public names (imported lazily so that ``import rssr_cli.train`` stays cheap):

- :func:`prepare_archive` / :class:`PrepareOptions` / :class:`PrepareReport` (:mod:`.archive`): archive -> patches;
- :class:`PatchCache`, :func:`save_cache`, :func:`load_cache` (:mod:`.cache`);
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
    "PatchCache": "cache",
    "save_cache": "cache",
    "load_cache": "cache",
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
