"""Distributed training: torchrun with 2 CPU processes on gloo, each rank on distinct data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rssr_cli.train.archive import PrepareOptions, prepare_archive
from rssr_cli.patches import save_cache

DATA = Path(__file__).parent / "data"


def _tiny_cache(folder):
    prepared = prepare_archive(DATA / "train_hr", options=PrepareOptions(patch=8, synthetic_lr=True,
                                                                           missing_band="mask"))
    return save_cache(prepared.cache, folder / "p.npz")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    cache = _tiny_cache(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "rssr_cli", "train", str(cache), "-o", str(out), "--steps", "4", "--batch-size", "2",
           "--device", "cpu", "--set", "model.preset=tiny", "--set", "warmup=1", "--set", "log_every=1",
           "--set", "val_every=2", "--set", "checkpoint_every=2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only rank 0 prints and writes.
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and Path(results[0]["weights"]).is_file()
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start = events[0]
    assert start["kind"] == "start" and start["world_size"] == 2
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2, 3, 4]
    # Each rank trains on its own patches.
    batches = [e for e in events if e["kind"] == "data"][0]["first_batch_by_rank"]
    assert len(batches) == 2 and not set(batches[0]) & set(batches[1])
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["world_size"] == 2 and state["step"] == 4
    from rssr_cli.weights import load_weights

    assert load_weights(results[0]["weights"]).provenance["world_size"] == 2


_POISON_RANK_1 = '''
import os, sys
import rssr_cli.diffusion as diffusion
from rssr_cli.errors import TrainingError
from rssr_cli.train.config import load_config
from rssr_cli.train.loop import train

real = diffusion.diffusion_loss
def poisoned(*args, **kwargs):
    loss = real(*args, **kwargs)
    return loss * float("nan") if os.environ["RANK"] == "1" else loss
diffusion.diffusion_loss = poisoned
config = load_config(None, {"data": sys.argv[1], "out": sys.argv[2], "steps": 4, "batch_size": 2, "warmup": 1,
                            "model.preset": "tiny", "device": "cpu"})
try:
    train(config)
except TrainingError as exc:
    print(f"rank {os.environ['RANK']}: {exc}", flush=True)
    sys.exit(3)
'''


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_stops_every_rank(tmp_path):
    cache = _tiny_cache(tmp_path)
    script = tmp_path / "poison.py"
    script.write_text(_POISON_RANK_1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           str(cache), str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A rank left waiting in a collective would hang until the timeout.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "rank 1: the loss became nan at step 1" in proc.stdout
    assert "rank 0: the loss became non-finite on another process at step 1" in proc.stdout


@pytest.mark.slow
def test_torchrun_with_real_scenes(tmp_path):
    """The real-LR loss adds a second forward and backward per step; under DDP both synchronise."""
    import warnings

    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    cache = _tiny_cache(tmp_path)
    scene = tmp_path / "s2.tif"
    dn = (500 + 1000 * np.random.default_rng(0).random((4, 32, 32))).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(scene, "w", driver="GTiff", width=32, height=32, count=4, dtype="uint16") as ds:
            ds.write(dn)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "rssr_cli", "train", str(cache), "-o", str(out), "--steps", "2", "--batch-size", "2",
           "--device", "cpu", "--set", "model.preset=tiny", "--set", "warmup=1", "--set", "log_every=1",
           "--set", f'real_lr=["{scene}"]', "--set", "real_lr_weight=1.0", "--set", "real_lr_anchor=0",
           "--set", "real_lr_batch=2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["real_lr_loss"] for e in events if e["kind"] == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))
