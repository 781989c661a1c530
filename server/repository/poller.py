"""--model-control-mode poll: notice models added, changed or removed on disk, and apply that."""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Callable
from typing import Any

from tensorwire.server.repository.layout import CONFIG_FILE, MODEL_FILE, file_fingerprint, is_model_name

log = logging.getLogger(__name__)

Fingerprint = tuple[Any, ...]


def model_fingerprint(model_dir: pathlib.Path) -> Fingerprint:
    """Changes whenever the model's config or any version's model file changes."""
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return (file_fingerprint(model_dir / CONFIG_FILE), *((v.name, file_fingerprint(v / MODEL_FILE)) for v in versions))


def repository_fingerprints(root: pathlib.Path) -> dict[str, Fingerprint]:
    found = {}
    for model_dir in root.iterdir():
        if not is_model_name(model_dir.name):
            continue
        try:
            if model_dir.is_dir():
                found[model_dir.name] = model_fingerprint(model_dir)
        except OSError:
            continue  # removed while we looked, or a link we may not follow: the next pass looks again
    return found


class RepositoryPoller:
    """Every `interval` seconds, call apply("load", name) or apply("unload", name) for what changed."""

    def __init__(self, root: pathlib.Path, interval: float, apply: Callable[[str, str], Any]) -> None:
        self._root = root
        self._interval = interval
        self._apply = apply
        self._known = repository_fingerprints(root)
        self._stop = threading.Event()

    def start(self) -> RepositoryPoller:
        threading.Thread(target=self._run, name="repository-poller", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception:
                log.exception("repository poll failed")

    def poll_once(self) -> None:
        current = repository_fingerprints(self._root)
        for name in sorted(set(self._known) - set(current)):
            log.info("model %s removed from the repository: unloading", name)
            self._apply_logged("unload", name)
        for name, fingerprint in sorted(current.items()):
            if self._known.get(name) != fingerprint:
                log.info("model %s %s on disk: loading", name, "changed" if name in self._known else "added")
                self._apply_logged("load", name)
        self._known = current

    def _apply_logged(self, op: str, name: str) -> None:
        try:
            self._apply(op, name)
        except Exception as exc:
            log.error("poll: %s %s failed: %s", op, name, exc)
