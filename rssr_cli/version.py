"""The installed rssr version (provenance tags, weights files, ``rssr --version``), in its own module so that any
module can read it without importing the package's public API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rssr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
