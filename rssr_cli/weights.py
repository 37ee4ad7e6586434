"""The weights file: one safetensors file per model, its configuration and provenance inside.

Public API (``rssr train`` writes with the first, everything else reads):

- ``save_weights(path, model, config, provenance)``: write atomically (temp file + rename).
- ``load_weights(path, device="cpu") -> LoadedModel``: validate and build the model (``model, config, provenance =
  load_weights(p)`` also works).
- ``read_config(path) -> dict``: the config as stored, reading only the file's header.
- ``describe_weights(path) -> dict``: what ``rssr info --weights PATH`` shows (config, provenance, size, parameters).
- ``default_weights_path() -> Path``: the model shipped in ``weights/`` (``$RSSR_WEIGHTS`` overrides it).
- ``resolve_weights(path | None) -> Path``: the file to use, or a :class:`WeightsError` saying what to pass.

Layout: safetensors tensors (the model's learnt state dict, float32) and string metadata:
``format`` = "rssr-weights", ``format_version`` = "1", ``config`` (JSON of :meth:`ModelConfig.to_dict`),
``provenance`` (JSON: training data, steps, code version, ...), ``tensors_sha256`` (a digest of every tensor's name,
dtype, shape and bytes, which catches bit rot that the safetensors header alone would not).

Every failure is a :class:`~rssr_cli.errors.WeightsError` with a one-line message naming the file. Nothing is ever
downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import WeightsError
from rssr_cli.model import ModelConfig, SRModel, build_model

__all__ = [
    "DEFAULT_WEIGHTS_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedModel",
    "default_weights_path",
    "describe_weights",
    "load_weights",
    "read_config",
    "resolve_weights",
    "save_weights",
]

FORMAT = "rssr-weights"
FORMAT_VERSION = "1"
DEFAULT_WEIGHTS_NAME = "rssr-s2-x12.5.safetensors"


@dataclass(frozen=True)
class LoadedModel:
    """A validated model ready for inference (eval mode, on the requested device)."""

    model: SRModel
    config: ModelConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    digest: str = ""

    def __iter__(self) -> Iterator[Any]:
        """``model, config, provenance = load_weights(path)``."""
        return iter((self.model, self.config, self.provenance))

    @property
    def name(self) -> str:
        """A short identifier for provenance tags: file name and the start of the tensor digest."""
        stem = self.path.name if self.path else "in-memory"
        return f"{stem}@{self.digest[:12]}" if self.digest else stem


def default_weights_path() -> Path:
    """``$RSSR_WEIGHTS`` if set, else the shipped model: ``weights/`` at the top of the rssr checkout (editable
    installs), or ``<prefix>/share/rssr/weights/`` where a wheel install puts it."""
    env = os.environ.get("RSSR_WEIGHTS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME
    installed = Path(sys.prefix) / "share" / "rssr" / "weights" / DEFAULT_WEIGHTS_NAME
    return installed if not checkout.is_file() and installed.is_file() else checkout


def resolve_weights(path: str | os.PathLike[str] | None) -> Path:
    """The weights file to use: ``path`` if given, else the default; an error saying what to do if it is missing."""
    if path is None:
        default = default_weights_path()
        if not default.is_file():
            raise WeightsError(f"no default model weights at {default}; pass --weights PATH, or use --method bicubic")
        return default
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {p} does not exist; check --weights")
    return p


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(path: str | os.PathLike[str], model: SRModel, config: ModelConfig | None = None,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict, ``config`` (default ``model.config``) and ``provenance`` (JSON-able) to ``path``.

    Written to a temporary file in the same folder and renamed, so a crash never leaves a half-written model behind.
    """
    from safetensors.torch import save_file

    config = config or model.config
    if config != model.config:
        raise WeightsError("save_weights: the config differs from the one the model was built with")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    try:
        provenance_json = json.dumps(provenance or {}, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"save_weights: provenance is not JSON-serialisable: {exc}") from exc
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "provenance": provenance_json,
        "tensors_sha256": _tensor_digest(tensors),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(target) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise WeightsError(f"cannot write weights file {target}: {exc.strerror or exc}") from exc
    return target



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, {tensor name: shape}) from the safetensors header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own error types (and OSError) for corrupt/truncated files
        raise WeightsError(f"{path} is not a readable weights file (corrupt or truncated?): {_first_line(exc)}") \
            from exc
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path} is a safetensors file but not an rssr weights file (no format={FORMAT} metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has weights format version {metadata.get('format_version')!r}; "
                           f"this rssr reads version {FORMAT_VERSION}")
    return metadata, shapes


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: the {key!r} metadata is missing or not valid JSON") from exc


def _config(path: Path, metadata: dict[str, str]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(_json_field(path, metadata, "config"))
    except ValueError as exc:
        raise WeightsError(f"{path}: invalid model config: {_first_line(exc)}") from exc


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored config (validated), as a plain dict, reading only the header."""
    p = resolve_weights(path)
    metadata, _ = _read_header(p)
    return _config(p, metadata).to_dict()


def _check_shapes(path: Path, model: SRModel, shapes: dict[str, tuple[int, ...]]) -> None:
    """The file's tensors must be exactly the architecture's: same names, same shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        detail = f"missing {len(missing)} tensor(s) (e.g. {missing[0]})" if missing else \
            f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})"
        raise WeightsError(f"{path} does not match the architecture in its config: {detail}")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise WeightsError(f"{path} does not match the architecture in its config: tensor {name} has shape "
                               f"{list(shapes[name])}, the config implies {list(shape)}")


def load_weights(path: str | os.PathLike[str] | None, device: str | torch.device = "cpu") -> LoadedModel:
    """Validate ``path`` (None: the default model) and return the model in eval mode on ``device``.

    Checks, in order: the file exists; the header parses (not truncated or garbage); it is an rssr weights file of a
    known version; the config is valid; the tensors match the architecture the config describes; the tensor bytes
    match the stored digest; every value is finite.
    """
    from safetensors.torch import load_file

    p = resolve_weights(path)
    metadata, shapes = _read_header(p)
    config = _config(p, metadata)
    provenance = _json_field(p, metadata, "provenance")
    model = build_model(config)
    _check_shapes(p, model, shapes)
    try:
        tensors = load_file(str(p), device="cpu")
    except Exception as exc:  # noqa: BLE001 - see _read_header
        raise WeightsError(f"{p} is not a readable weights file (corrupt or truncated?): {_first_line(exc)}") from exc
    digest = _tensor_digest(tensors)
    if digest != metadata.get("tensors_sha256"):
        raise WeightsError(f"{p} is corrupt: its tensors do not match the checksum stored in the file")
    bad = next((name for name, t in tensors.items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        raise WeightsError(f"{p} holds non-finite values (NaN or inf) in {bad}; the model diverged when it was saved")
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return LoadedModel(model=model, config=config, provenance=provenance, path=p, digest=digest)


def describe_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able summary of a weights file for ``rssr info --weights PATH``, from the header only."""
    p = resolve_weights(path)
    metadata, shapes = _read_header(p)
    config = _config(p, metadata)
    parameters = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        parameters += n
    return {
        "path": str(p),
        "format": f"{metadata['format']}/{metadata['format_version']}",
        "size_bytes": p.stat().st_size,
        "parameters": parameters,
        "tensors": len(shapes),
        "tensors_sha256": metadata.get("tensors_sha256", ""),
        "bands": list(config.bands),
        "scale": float(config.scale),
        "config": config.to_dict(),
        "provenance": _json_field(p, metadata, "provenance"),
    }
