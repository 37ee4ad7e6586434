"""`rssr train` killed with SIGKILL at a random moment, then restarted with --resume, ends with the uninterrupted
run's weights, bit for bit (a real process, a real signal: no hooks inside the trainer).

The kill point is random: a step drawn from a seed (printed in every assertion; set RSSR_KILL_SEED to replay one),
plus a random delay, so over many CI runs the kill lands in every phase of a step: the forward/backward pass, the
logging, the atomic checkpoint write. One run is a few seconds: a tiny model on a 7-patch cache.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rssr_cli.patches import save_cache
from rssr_cli.train.archive import PrepareOptions, prepare_archive

DATA = Path(__file__).parent / "data"
STEPS = 10
CHECKPOINT_EVERY = 2


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    prepared = prepare_archive(DATA / "train_hr", options=PrepareOptions(patch=8, synthetic_lr=True,
                                                                           missing_band="mask"))
    return save_cache(prepared.cache, tmp_path_factory.mktemp("cache") / "p.npz")


def _command(cache: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rssr_cli", "train", str(cache), "-o", str(out), "--steps", str(STEPS),
            "--batch-size", "2", "--device", "cpu", "--set", "model.preset=tiny", "--set", "warmup=2",
            "--set", "log_every=1", "--set", "val_every=5", "--set", f"checkpoint_every={CHECKPOINT_EVERY}",
            "--set", "val_fraction=0.3", "--json", *extra]


def _env() -> dict[str, str]:
    # One thread in every run: the same arithmetic in the same order (and no OpenMP spin-waits on a busy CPU).
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _events(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return events


def _trained_to(out: Path) -> int:
    return max((e["step"] for e in _events(out) if e.get("kind") == "train"), default=0)


def _kill_at_random(command: list[str], out: Path, rng: random.Random, why: str) -> int:
    """Start ``command``, SIGKILL it once a checkpoint exists and a random step has been logged (after a random
    delay); returns the step logged last before the kill."""
    kill_after = rng.randint(CHECKPOINT_EVERY, STEPS - 4)
    delay = rng.uniform(0.0, 0.08)
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while not ((out / "checkpoint.pt").exists() and _trained_to(out) >= kill_after):
            assert proc.poll() is None, f"{why}: the run ended before the kill: {proc.communicate()[1].decode()}"
            assert time.monotonic() < deadline, f"{why}: no progress"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{why}: finished before the kill (exit {proc.returncode}): " \
                                               f"{err.decode()[-500:]}"
    return _trained_to(out)


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_weights(cache_path, tmp_path):
    from safetensors.torch import load_file

    seed = int(os.environ.get("RSSR_KILL_SEED", random.SystemRandom().randrange(2**32)))
    why = f"RSSR_KILL_SEED={seed}"
    full, part = tmp_path / "full", tmp_path / "part"
    reference = subprocess.Popen(_command(cache_path, full), env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)  # runs beside the interrupted one
    try:
        killed_at = _kill_at_random(_command(cache_path, part), part, random.Random(seed), why)
        resumed_from = _checkpoint(part)["step"]
        assert CHECKPOINT_EVERY <= resumed_from <= killed_at + 1, why
        resumed = subprocess.run(_command(cache_path, part, "--resume"), env=_env(), capture_output=True, text=True)
        assert resumed.returncode == 0, f"{why}: {resumed.stderr}"
        assert json.loads(resumed.stdout)["steps"] == STEPS
    finally:
        _, ref_err = reference.communicate()
    assert reference.returncode == 0, ref_err.decode()

    a, b = _checkpoint(full), _checkpoint(part)
    assert a["step"] == b["step"] == STEPS, why
    _assert_same_tensors(a["model"], b["model"], f"{why}: model (killed after step {killed_at})")
    _assert_same_tensors(a["ema"]["shadow"], b["ema"]["shadow"], f"{why}: EMA")
    assert a["ema"]["updates"] == b["ema"]["updates"] == STEPS, why
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys(), why
    for i in sa:
        _assert_same_tensors(sa[i], sb[i], f"{why}: optimiser state {i}")
    _assert_same_tensors(load_file(full / "model.safetensors"), load_file(part / "model.safetensors"),
                         f"{why}: exported weights")
    # A checkpoint write cut short by the kill left a temporary file; the resumed run removed it.
    assert not [p.name for p in part.iterdir() if ".rssr-tmp-" in p.name], why
    # The resumed log is the uninterrupted run's: every step logged once, with the same loss.
    strip = lambda evs: [(e["kind"], e["step"], e.get("loss"), e.get("val_psnr")) for e in evs
                         if e["kind"] in ("train", "val")]
    assert strip(_events(full)) == strip(_events(part)), why


def test_a_resumed_run_removes_what_a_killed_write_left(tmp_path):
    from rssr_cli.train.checkpoint import remove_stale_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    stale = tmp_path / f".checkpoint.rssr-tmp-{dead}.pt"
    mine = tmp_path / f".checkpoint.rssr-tmp-{os.getpid()}.pt"  # a live process's write in progress
    other = tmp_path / f".other.rssr-tmp-{dead}.pt"
    for path in (stale, mine, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries([tmp_path / "checkpoint.pt"]) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()
