"""rssr: diffusion super-resolution of Sentinel-2 imagery (10 m -> 0.8 m) to Cloud-Optimized GeoTIFFs.

The public Python API; the ``rssr`` command line is a thin layer over it. Heavy modules are imported on first use.
"""

from __future__ import annotations

from rssr_cli.errors import (
    AOIError,
    DataError,
    InputError,
    OutputError,
    RssrError,
    TrainingError,
    UsageError,
    WeightsError,
)

from rssr_cli.version import __version__

__all__ = [
    "AOIError", "DataError", "InputError", "OutputError", "RssrError", "TrainingError", "UsageError", "WeightsError",
    "__version__", "upscale", "open_scene", "plan_upscale", "load_weights",
]
# Training and evaluation live in their modules: rssr_cli.train.train(...), rssr_cli.train.prepare_archive(...),
# rssr_cli.evaluate.evaluate(...).


def __getattr__(name: str):
    # Lazy public API: `import rssr_cli` stays light, `rssr_cli.upscale(...)` works in a notebook.
    if name in ("upscale", "plan_upscale", "UpscaleOptions", "UpscaleResult"):
        import rssr_cli.pipeline as pipeline

        return getattr(pipeline, name)
    if name == "load_weights":
        from rssr_cli.weights import load_weights

        return load_weights
    if name == "open_scene":
        from rssr_cli.scene import open_scene

        return open_scene
    raise AttributeError(f"module 'rssr_cli' has no attribute {name!r}")
