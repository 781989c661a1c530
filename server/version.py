"""The installed tensorwire's version, read from its package metadata: pyproject.toml is the one place it is written."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("tensorwire")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    VERSION = "0+unknown"
