from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

DATA = Path(__file__).parent / "data"
BOADELLA = DATA / "boadella_l2a_4326.tif"  # 12 bands, int16, EPSG:4326, no descriptions: -b 2,3,4,8
AWS_BANDS = [DATA / "aws_29RKH" / f"{b}.tif" for b in ("B02", "B03", "B04", "B08")]  # uint16, UTM 29N, nodata 0
NOCRS = DATA / "nocrs.tif"


def write_raster(path: Path, data: np.ndarray, *, crs="EPSG:32632", transform=None, nodata=None,
                 descriptions=None, scales=None, offsets=None) -> Path:
    """A small GeoTIFF for tests (data (C, H, W))."""
    transform = transform or Affine(10.0, 0, 500000.0, 0, -10.0, 5200000.0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
        if scales:
            dst.scales = tuple(scales)
        if offsets:
            dst.offsets = tuple(offsets)
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is as fast as two, and immune to OpenMP spin-waits when other jobs share the CPU
    (measured 100x slower with two threads on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def utm_scene(tmp_path) -> Path:
    """Real Boadella pixels (B02, B03, B04, B08 DNs) on a 10 m UTM 32N grid, with band descriptions."""
    with rasterio.open(BOADELLA) as src:
        data = np.maximum(src.read([2, 3, 4, 8]), 1).astype(np.uint16)  # a few NIR pixels are 0 (= nodata) there
    return write_raster(tmp_path / "utm.tif", data, descriptions=["B02", "B03", "B04", "B08"], nodata=0)


@pytest.fixture
def aws_bands(tmp_path) -> list[Path]:
    out = []
    for src in AWS_BANDS:
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        out.append(dst)
    return out


def random_tiny_model(seed: int = 0, **overrides: object):
    """A tiny model with every parameter random (the real initialisation zeroes output layers, which would hide
    bugs: a zero network ignores its inputs)."""
    from rssr_cli.model import ModelConfig

    return random_model(ModelConfig.tiny(**overrides), seed)


def random_model(config, seed: int = 0):
    """A model of ``config`` with every parameter random (see :func:`random_tiny_model`)."""
    import torch

    from rssr_cli.model import build_model

    model = build_model(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_boadella_utm(folder: Path) -> Path:
    """The real Boadella L2A crop as a 4-band uint16 scene (B02 B03 B04 B08, DN >= 1, nodata 0) on a UTM grid: small
    real pixels for tests that run rssr in subprocesses."""
    import rasterio

    with rasterio.open(BOADELLA) as src:
        data = np.maximum(src.read([2, 3, 4, 8]), 1).astype(np.uint16)
    return write_raster(folder / "utm.tif", data, nodata=0, descriptions=["B02", "B03", "B04", "B08"])

