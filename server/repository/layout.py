"""Where things live in a model repository: `<root>/<model>/<version>/model.npz` (+ `<model>/config.json`).

Light on purpose (no numba, no gRPC): the supervisor and the poller use it too.
"""

from __future__ import annotations

import pathlib
import re

MODEL_FILE = "model.npz"
CONFIG_FILE = "config.json"
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_model_name(name: str) -> bool:
    """A name that is a single path component inside the repository, never '.', '..' or a path."""
    return bool(MODEL_NAME.match(name)) and name not in (".", "..")


def model_names(root: pathlib.Path) -> list[str]:
    """Names of the model folders under the repository root."""
    return sorted(p.name for p in root.iterdir() if is_model_name(p.name) and _is_dir(p))


def version_numbers(model_dir: pathlib.Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and int(p.name) > 0 and _is_dir(p)]


def _is_dir(path: pathlib.Path) -> bool:
    """is_dir, False for an entry that cannot be looked at (e.g. a link into a folder this user may not read)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def file_fingerprint(path: pathlib.Path) -> tuple[int, int, int]:
    """What tells a changed file from the one loaded: inode, size, modification time."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0, 0)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
