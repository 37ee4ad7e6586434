"""Diffusion noise as a function of position: the same pixel gets the same noise whatever the tiling.

A random generator gives each tile its own stream, so two overlapping tiles would start from different noise, sample
different details, and the blend would show seams. Here the noise at an HR pixel is a pure function of
(seed, sample, step, global row, global col, channel): a counter-based generator. A 32-bit integer hash
(Wellons' "lowbias32", a well-mixed invertible hash) is chained over the key's parts down to one state per pixel and
channel pair, two more hashes give two uniforms, and Box–Muller turns them into two independent standard normals
(channels 2p and 2p+1).

Integer work uses int64 tensors holding 32-bit values; products are split so they never exceed 2^48, so no op relies on
overflow behaviour and the bits are identical on CPU and CUDA. The final log/cos are computed in float64 and rounded
to float32, so the normals agree across devices to the last bit in practice (and to 1e-6 at worst).
"""

from __future__ import annotations

import math

import torch

__all__ = ["positional_noise", "tile_noise"]

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2^32 for x in [0, 2^32), without int64 overflow: split c into 16-bit halves."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons, "Prospecting for hash functions"): a bijection on 32-bit integers with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix(h: torch.Tensor, value: torch.Tensor | int) -> torch.Tensor:
    """Fold one more key part into a hash state (values are reduced to 32 bits; negative ones wrap)."""
    v = torch.as_tensor(value, dtype=torch.int64, device=h.device) & _MASK32
    return _hash32(h ^ _hash32((v + 0x9E3779B9) & _MASK32))


def positional_noise(
    seed: int,
    step: int,
    rows: int,
    cols: int,
    channels: int,
    *,
    row0: int = 0,
    col0: int = 0,
    sample: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal noise (channels, rows, cols), float32, for the HR pixels [row0, row0+rows) × [col0, col0+cols).

    ``seed`` (any int; reduced to 64 bits), ``sample`` (which of several draws) and ``step`` (which use within one
    sampler run) select independent fields. ``row0``/``col0`` are global HR positions and may be negative.
    """
    dev = torch.device(device)
    seed64 = seed & 0xFFFFFFFFFFFFFFFF
    h = torch.tensor(0x3C6EF372, dtype=torch.int64, device=dev)
    for part in (seed64 & _MASK32, seed64 >> 32, sample, step):
        h = _mix(h, part)
    r = torch.arange(row0, row0 + rows, dtype=torch.int64, device=dev)[None, :, None]
    c = torch.arange(col0, col0 + cols, dtype=torch.int64, device=dev)[None, None, :]
    h = _mix(_mix(h, r), c)  # (1, rows, cols): one state per pixel
    # Box-Muller gives two independent normals (cos and sin) per pair of uniforms: channels 2p and 2p+1 share one
    # per-pixel pair state, which halves the hashing.
    pairs = (channels + 1) // 2
    p = torch.arange(pairs, dtype=torch.int64, device=dev)[:, None, None]
    bits1 = _hash32(h ^ _hash32(p * 2 + 0x68E31DA4))
    bits2 = _hash32(bits1 ^ 0xB5297A4D)
    # 24-bit uniforms; u1 in (0, 1] so that log(u1) is finite.
    u1 = ((bits1 >> 8).double() + 1.0) / 16777216.0
    u2 = (bits2 >> 8).double() / 16777216.0
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = 2.0 * math.pi * u2
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).reshape(2 * pairs, rows, cols)
    return z[:channels].float()


def tile_noise(
    seed: int,
    step: int,
    origins: list[tuple[int, int]] | tuple[tuple[int, int], ...],
    shape: tuple[int, int, int],
    *,
    sample: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise (N, C, H, W) for a batch of tiles whose top-left HR pixels are ``origins``; ``shape`` is (C, H, W)."""
    c, h, w = shape
    return torch.stack([
        positional_noise(seed, step, h, w, c, row0=r, col0=q, sample=sample, device=device) for r, q in origins
    ])
