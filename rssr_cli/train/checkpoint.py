"""Training checkpoints: the file format, reading and writing it, and what a resumed run must keep unchanged.

A checkpoint is a plain dict saved with :func:`torch.save` (``"format": CHECKPOINT_FORMAT``): model, optimiser and EMA
state dicts, the step, the model and training configs, the number of processes and patches, the last metrics and
the global RNG states. It is read with ``weights_only=True``: a checkpoint holds data, never pickled code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import DataError, UsageError
from rssr_cli.train.config import TrainConfig

#: /2: seeds derived with numpy's SeedSequence. A /1 checkpoint's run drew from other random streams (its split,
#: data order and noise), so it cannot be continued exactly and is refused.
CHECKPOINT_FORMAT = "rssr-checkpoint/2"

#: TrainConfig fields that decide what every step draws; a resumed run must keep them to continue exactly.
RESUME_FIXED: tuple[str, ...] = ("seed", "batch_size", "crop", "val_fraction", "augment", "fresh_degradation",
                                 "radiometric", "brightness", "spectral_gain", "haze", "band_offset", "source_balance",
                                 "real_lr", "real_lr_bidx", "real_lr_weight", "real_lr_batch", "real_lr_anchor")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (with the format tag added) atomically: an interrupted save keeps the previous checkpoint."""
    with atomic_write(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # plain data only: no pickled code
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise DataError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else exc})") \
            from None
    if isinstance(state, dict) and state.get("format") == "rssr-checkpoint/1":
        raise DataError(f"{path}: written by an earlier rssr whose random streams differ; it cannot be continued "
                        "exactly: start the run over")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not an rssr training checkpoint")
    return state


def check_resumable(state: dict[str, Any], config: TrainConfig, *, patches: int, world: int, data_name: str) -> None:
    """Refuse to resume when the run would not continue exactly: other data order, data or number of processes."""
    old, new = state["train_config"], config.to_dict()  # both plain JSON types (lists, not tuples)
    defaults = TrainConfig().to_dict()  # a key newer than the checkpoint had its default then
    for key in RESUME_FIXED:
        before = old.get(key, defaults.get(key))
        if before != new.get(key):
            raise UsageError(f"--resume: {key} was {before!r} in the interrupted run, now {new.get(key)!r}; an exact "
                             "continuation needs the same value")
    if state.get("patches") not in (None, patches):
        raise UsageError(f"--resume: the run trained on {state['patches']} patches, {data_name} has {patches}; "
                         "resume with the same data")
    if state.get("world_size") != world:
        raise UsageError(f"--resume: the run used {state.get('world_size')} process(es), now {world}; an exact "
                         "continuation needs the same number")


def truncate_log(log: Path, step: int) -> None:
    """On resume, drop events logged after the checkpoint's step (the resumed run logs them again). The log is
    replaced atomically: a run killed while truncating keeps the whole log, truncated again on the next resume."""
    if not log.exists():
        return
    keep = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("step", 0) <= step and event.get("kind") != "done":
            keep.append(line)
    with atomic_write(log) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


def remove_stale_temporaries(outputs: list[Path]) -> list[Path]:
    """Remove the temporary files a killed run left beside ``outputs`` (an atomic write interrupted by SIGKILL or a
    power loss: ``.NAME.rssr-tmp-PID.SUFFIX``) whose process is gone; returns what was removed."""
    removed = []
    for target in outputs:
        pattern = re.compile(rf"\.{re.escape(target.stem)}\.rssr-tmp-(\d+){re.escape(target.suffix)}")
        for path in target.parent.glob(f".{target.stem}.rssr-tmp-*{target.suffix}"):
            match = pattern.fullmatch(path.name)
            if match and not _alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
