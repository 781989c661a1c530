"""The model repository: `<root>/<model>/<version>/model.npz`, loaded, warmed and looked up.

Every version is loaded and warmed (its kernels compiled) before it is listed
as READY. Lookups read an immutable snapshot, so they take no lock; loading
builds a new snapshot and swaps it in, and requests already holding the old
model finish on it. A version that fails to load is kept as UNAVAILABLE with
its reason, and never stops the other models from serving.
"""

from __future__ import annotations

import logging
import pathlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tensorwire.kernels.validation import first_nonfinite_row
from tensorwire.server.errors import ModelNotFoundError, ModelNotReadyError
from tensorwire.server.model_format import MODEL_FILE, Manifest, ModelFormatError, TensorSpec, load_model
from tensorwire.server.scoring import Scorer, build_scorer

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"
WARM_UP_ROWS = (1, 64)


@dataclass(frozen=True, eq=False)
class Model:
    """One loaded, warmed version of a model: what the request path needs, precomputed."""

    name: str
    version: str
    manifest: Manifest
    scorer: Scorer
    outputs: dict[str, TensorSpec]
    output_names: tuple[str, ...]
    input_dtype: np.dtype  # type: ignore[type-arg]

    @classmethod
    def load(cls, name: str, version: str, path: pathlib.Path) -> Model:
        stored = load_model(path)
        manifest = stored.manifest
        scorer = build_scorer(manifest, stored.arrays, str(path))
        model = cls(
            name=name,
            version=version,
            manifest=manifest,
            scorer=scorer,
            outputs={o.name: o for o in manifest.outputs},
            output_names=tuple(o.name for o in manifest.outputs),
            input_dtype=np.dtype("<f4" if manifest.input_datatype == "FP32" else "<f8"),
        )
        model.warm_up()
        return model

    def warm_up(self) -> None:
        """Compile the kernels for the exact array types requests bring (read-only views)."""
        rng = np.random.default_rng(0)
        for rows in WARM_UP_ROWS:
            data = rng.standard_normal((rows, self.manifest.n_features)).astype(self.input_dtype).tobytes()
            X = np.frombuffer(data, dtype=self.input_dtype).reshape(rows, -1)
            first_nonfinite_row(X)
            self.scorer.score(X, self.output_names)


@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: str  # READY or UNAVAILABLE
    reason: str = ""
    model: Model | None = None


@dataclass(frozen=True)
class ModelEntry:
    """Every version of one model found on disk, and which one requests get by default."""

    name: str
    versions: dict[str, VersionStatus] = field(default_factory=dict)

    @property
    def default_version(self) -> str | None:
        ready = [v for v, s in self.versions.items() if s.state == READY]
        return max(ready, key=int) if ready else None


class ModelRepository:
    def __init__(self, root: pathlib.Path | str) -> None:
        self.root = pathlib.Path(root)
        self._models: dict[str, ModelEntry] = {}
        self._write_lock = threading.Lock()

    def load_all(self) -> None:
        """Load every model found under the root."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a directory")
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and MODEL_NAME.match(path.name):
                self.load(path.name)

    def load(self, name: str) -> ModelEntry:
        """(Re)load every version of one model and swap it in."""
        if not MODEL_NAME.match(name):
            raise ModelNotFoundError(f"'{name}' is not a valid model name")
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise ModelNotFoundError(f"model '{name}' is not in the repository {self.root}")
        entry = ModelEntry(name, {v: self._load_version(name, v, model_dir / v) for v in _version_dirs(model_dir)})
        if not entry.versions:
            entry = ModelEntry(name, {"1": VersionStatus("1", UNAVAILABLE, f"no version directory with a {MODEL_FILE}")})
            log.error("model %s: no version directory with a %s under %s", name, MODEL_FILE, model_dir)
        with self._write_lock:
            self._models = {**self._models, name: entry}
        return entry

    def unload(self, name: str) -> None:
        with self._write_lock:
            if name not in self._models:
                raise ModelNotFoundError(f"model '{name}' is not loaded")
            self._models = {k: v for k, v in self._models.items() if k != name}

    def _load_version(self, name: str, version: str, version_dir: pathlib.Path) -> VersionStatus:
        try:
            model = Model.load(name, version, version_dir / MODEL_FILE)
        except ModelFormatError as exc:
            log.error("model %s version %s failed to load: %s", name, version, exc)
            return VersionStatus(version, UNAVAILABLE, str(exc))
        except Exception as exc:  # a model must never take the server down with it
            log.exception("model %s version %s failed to load", name, version)
            return VersionStatus(version, UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        log.info("model %s version %s ready (%s)", name, version, model.manifest.kind)
        return VersionStatus(version, READY, model=model)

    def get(self, name: str, version: str = "") -> Model:
        """The model that serves a request, or the error that explains why none does."""
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFoundError(f"unknown model '{name}'")
        if not version:
            default = entry.default_version
            if default is None:
                reasons = "; ".join(f"version {s.version}: {s.reason}" for s in entry.versions.values())
                raise ModelNotReadyError(f"model '{name}' has no ready version ({reasons})")
            version = default
        status = entry.versions.get(version)
        if status is None:
            raise ModelNotFoundError(f"model '{name}' has no version '{version}' (versions: {sorted(entry.versions, key=_version_key)})")
        if status.model is None:
            raise ModelNotReadyError(f"model '{name}' version {version} is not ready: {status.reason}")
        return status.model

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFoundError(f"unknown model '{name}'")
        return entry

    def entries(self) -> Iterator[ModelEntry]:
        return iter(self._models.values())

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except (ModelNotFoundError, ModelNotReadyError):
            return False
        return True

    def unindexed_names(self) -> list[str]:
        """Model folders on disk that are not loaded (for RepositoryIndex)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.match(p.name) and p.name not in self._models)


def _version_dirs(model_dir: pathlib.Path) -> list[str]:
    return sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)
