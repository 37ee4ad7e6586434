"""The diffusion method's device path, as far as a machine without a GPU can check it: the batch size fitted to free
device memory (the arithmetic, with the CUDA queries stood in for), ``--compile`` ignored on the CPU, and results that
do not depend on the batch they are computed in (what a sharded run and a fitted batch size rely on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rssr_cli.methods.diffusion import MAX_FITTED_BATCH, DiffusionUpsampler


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory):
    from conftest import random_tiny_model
    from rssr_cli.weights import save_weights

    model = random_tiny_model(seed=2)
    return save_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors", model, model.config, {"note": "random"})


def _pretend_cuda(monkeypatch, upsampler: DiffusionUpsampler, *, tile_mb: float, free_gb: float,
                  cached_gb: float = 0.0) -> None:
    """Stand in for the CUDA memory queries (and the one-tile probe) on a CPU-only machine."""
    monkeypatch.setattr(upsampler, "_fit_batch", True)
    monkeypatch.setattr(upsampler, "_tile_bytes", lambda shape: int(tile_mb * 2**20))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gb * 2**30), 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: int(cached_gb * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)


def test_the_batch_size_fits_the_free_device_memory(tiny_weights, monkeypatch):
    upsampler = DiffusionUpsampler(tiny_weights, device="cpu", steps=1)
    assert upsampler.fit_batch_size((28, 28)) is None and upsampler.batch_size == 1  # the CPU keeps its batch
    _pretend_cuda(monkeypatch, upsampler, tile_mb=100, free_gb=3)
    assert upsampler.fit_batch_size((28, 28)) == 16  # 0.7 x 3 GiB / 100 MiB = 21 -> a power of two
    assert upsampler.fit_batch_size((28, 28)) == 16  # measured once per tile shape


@pytest.mark.parametrize(("tile_mb", "free_gb", "cached_gb", "expected"),
                         [(100, 0.01, 0, 1), (10, 100, 0, MAX_FITTED_BATCH), (100, 1, 2, 16)])
def test_a_fitted_batch_is_at_least_one_and_at_most_the_cap(tiny_weights, monkeypatch, tile_mb, free_gb, cached_gb,
                                                             expected):
    upsampler = DiffusionUpsampler(tiny_weights, device="cpu", steps=1)
    _pretend_cuda(monkeypatch, upsampler, tile_mb=tile_mb, free_gb=free_gb, cached_gb=cached_gb)
    assert upsampler.fit_batch_size((36, 36)) == expected


def test_a_given_batch_size_is_kept(tiny_weights, monkeypatch):
    upsampler = DiffusionUpsampler(tiny_weights, device="cpu", steps=1, batch_size=3)
    assert upsampler.fit_batch_size((28, 28)) is None and upsampler.batch_size == 3


def test_compile_is_ignored_on_the_cpu(tiny_weights, caplog):
    plain = DiffusionUpsampler(tiny_weights, device="cpu", steps=1)
    compiled = DiffusionUpsampler(tiny_weights, device="cpu", steps=1, compile=True)
    assert not compiled.compiled and compiled.net is compiled.model
    assert "--compile applies to CUDA devices" in caplog.text
    assert compiled.provenance() == plain.provenance()  # same pixels, same fingerprint


@pytest.mark.usefixtures("one_torch_thread")
def test_a_tile_depends_on_its_batch_only_by_rounding(tiny_weights):
    """Three tiles in one call of batch 3, or one by one: the same up to float rounding, not bit for bit (oneDNN's
    kernels differ with the batch). So the processes of a sharded run agree on one batch size, and the batch size is
    part of a run's fingerprint."""
    rng = np.random.default_rng(0)
    lr = rng.uniform(0.02, 0.4, (3, 4, 12, 12)).astype(np.float32)
    origins = [(0, 0), (0, 100), (150, 0)]
    together = DiffusionUpsampler(tiny_weights, device="cpu", steps=2, batch_size=3).upscale_tiles(lr, origins)
    alone = DiffusionUpsampler(tiny_weights, device="cpu", steps=2, batch_size=1).upscale_tiles(lr, origins)
    assert together.mean.shape == (3, 4, 150, 150)
    assert np.abs(together.mean - alone.mean).max() < 1e-5


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh)")


@needs_cuda
def test_cuda_results_come_back_through_pinned_memory_unchanged(tiny_weights):
    """The pinned, non-blocking copies return what a plain synchronous copy returns, bit for bit."""
    from rssr_cli.methods.diffusion import sample_tiles

    upsampler = DiffusionUpsampler(tiny_weights, device="cuda", steps=2, batch_size=2, samples=2)
    lr = np.random.default_rng(1).uniform(0.02, 0.4, (2, 4, 12, 12)).astype(np.float32)
    origins = [(0, 0), (0, 150)]
    got = upsampler.upscale_tiles(lr, origins)
    mean, std = sample_tiles(upsampler.model, torch.from_numpy(lr).to("cuda"), origins, upsampler.sampler, seed=0,
                             samples=2, schedule=upsampler.schedule)
    assert np.array_equal(got.mean, mean.cpu().numpy()) and np.array_equal(got.std, std.cpu().numpy())


@needs_cuda
def test_cuda_fits_a_batch_that_runs(tiny_weights):
    upsampler = DiffusionUpsampler(tiny_weights, device="cuda", steps=2)
    batch = upsampler.fit_batch_size((48, 48))
    assert batch is not None and 1 <= batch <= MAX_FITTED_BATCH and batch & (batch - 1) == 0
    upsampler.batch_size = batch
    lr = np.full((batch, 4, 48, 48), 0.1, np.float32)
    assert upsampler.upscale_tiles(lr, [(0, 600 * i) for i in range(batch)]).mean.shape == (batch, 4, 600, 600)


@needs_cuda
def test_cuda_compile_is_close_to_eager_and_recorded(tiny_weights):
    lr = np.random.default_rng(2).uniform(0.02, 0.4, (2, 4, 12, 12)).astype(np.float32)
    eager = DiffusionUpsampler(tiny_weights, device="cuda", steps=2, batch_size=2)
    compiled = DiffusionUpsampler(tiny_weights, device="cuda", steps=2, batch_size=2, compile=True)
    assert compiled.compiled and compiled.provenance()["RSSR_COMPILED"] == "torch.compile"
    a = eager.upscale_tiles(lr, [(0, 0), (0, 150)]).mean
    b = compiled.upscale_tiles(lr, [(0, 0), (0, 150)]).mean
    assert np.abs(a - b).mean() < 0.01  # bf16 either way; fused kernels round differently
