"""The model repository: `<root>/<model>/<version>/model.npz`, loaded, warmed and looked up.

Every version is loaded and warmed (its kernels compiled) before it is listed
as READY. Lookups read an immutable snapshot, so they take no lock; loading
builds a new snapshot and swaps it in, and requests already holding the old
model finish on it. A version that fails to load is kept as UNAVAILABLE with
its reason, and never stops the other models from serving. Model folders and
files must resolve inside the repository root unless symbolic links out of it
are allowed (--follow-symlinks).
"""

from __future__ import annotations

import functools
import logging
import pathlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from tensorwire.kernels.validation import first_nonfinite_row, first_refused_row
from tensorwire.protos.wire import InferResponseEncoder
from tensorwire.server.errors import ModelNotFoundError, ModelNotReadyError, shown
from tensorwire.server.inference.batcher import DynamicBatcher
from tensorwire.server.inference.drift import DriftMonitor
from tensorwire.server.inference.request_plans import planned_writer
from tensorwire.server.modeling.reference_profile import ARRAY_NAMES as PROFILE_ARRAYS
from tensorwire.server.modeling.reference_profile import read_profile
from tensorwire.server.modeling.registry import Scorer, build_scorer
from tensorwire.server.repository.layout import CONFIG_FILE, file_fingerprint, is_model_name, model_names, version_numbers
from tensorwire.server.repository.model_config import Drift, DynamicBatching, ModelConfigError, read_model_config
from tensorwire.server.repository.model_format import MODEL_FILE, ON_REQUEST_OUTPUTS, Manifest, ModelFormatError, TensorSpec, load_model

# A request is scored on the event loop (aio engine) when it is this small, about a millisecond of
# work at most; a longer one goes to the thread pool, so that it never stalls the requests behind it.
QUICK_MAX_ROWS = 1024
QUICK_MAX_WORK = 1_000_000  # rows x the model's parameter count

log = logging.getLogger(__name__)

MAX_NAMES_IN_ERRORS = 10

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
WARM_UP_ROWS = (1, 64)
MODEL_LEVEL_VERSION = "1"  # the version a failure of the whole model (its folder, its config.json) is listed under
MAX_REASON_CHARS = 1000  # a reason travels in RepositoryIndex and in status details


class OutsideRepositoryError(ValueError):
    """A model's folder or file resolves, through a symbolic link, outside the repository root."""


# failures a hostile or broken repository causes: logged without a traceback, which would only say where we noticed
EXPECTED_FAILURES = (ModelFormatError, ModelConfigError, OutsideRepositoryError, OSError)


def failure_reason(exc: Exception) -> str:
    """An exception as the bounded reason shown in RepositoryIndex and the log."""
    text = str(exc) if isinstance(exc, EXPECTED_FAILURES) else f"{type(exc).__name__}: {exc}"
    if len(text) <= MAX_REASON_CHARS:
        return text
    return f"{text[:MAX_REASON_CHARS]}… ({len(text)} characters)"


@dataclass(frozen=True, eq=False)
class Model:
    """One loaded, warmed version of a model: what the request path needs, precomputed."""

    name: str
    version: str
    manifest: Manifest
    scorer: Scorer
    outputs: dict[str, TensorSpec]
    output_names: tuple[str, ...]  # what a request that names no outputs gets: every output but the ON_REQUEST_OUTPUTS
    input_dtype: np.dtype  # type: ignore[type-arg]
    fingerprint: tuple[int, int, int]
    work_per_row: int  # parameters a row is scored against: a rough cost, to keep long requests off the event loop
    batching: DynamicBatching | None = None
    batcher: DynamicBatcher | None = None
    drift_config: Drift = Drift()
    drift: DriftMonitor | None = None  # counts scored rows against the file's reference profile, where it has one

    @classmethod
    def load(cls, name: str, version: str, path: pathlib.Path, batching: DynamicBatching | None = None, drift_config: Drift = Drift()) -> Model:
        fingerprint = file_fingerprint(path)
        stored = load_model(path)
        manifest = stored.manifest
        scorer = build_scorer(manifest, stored.arrays, str(path))
        input_dtype = np.dtype("<f4" if manifest.input_datatype == "FP32" else "<f8")
        try:
            profile = read_profile(manifest.params, stored.arrays, manifest.n_features) if drift_config.enabled else None
        except ValueError as exc:
            raise ModelFormatError(path, str(exc)) from None
        model = cls(
            name=name,
            version=version,
            manifest=manifest,
            scorer=scorer,
            outputs={o.name: o for o in manifest.outputs},
            output_names=tuple(o.name for o in manifest.outputs if o.name not in ON_REQUEST_OUTPUTS),
            input_dtype=input_dtype,
            fingerprint=fingerprint,
            work_per_row=max(1, getattr(scorer, "work_per_row", None) or sum(a.size for n, a in stored.arrays.items() if n not in PROFILE_ARRAYS)),
            batching=batching,
            batcher=None if batching is None else DynamicBatcher(scorer, batching, f"{name}-{version}"),
            drift_config=drift_config,
            drift=None if profile is None else DriftMonitor(profile, drift_config.window_rows, input_dtype),
        )
        model.warm_up()
        return model

    @functools.cached_property
    def response_encoder(self) -> InferResponseEncoder:
        return InferResponseEncoder(self.name, self.version, {name: spec.datatype for name, spec in self.outputs.items()})

    @functools.cached_property
    def input(self) -> TensorSpec:
        """The one input tensor every model takes: (rows, n_features)."""
        return self.manifest.inputs[0]

    @functools.cached_property
    def quick_max_rows(self) -> int:
        """The most rows of a request scored on the event loop (see QUICK_MAX_ROWS); 0 with a batch queue."""
        if self.batcher is not None:
            return 0
        return min(QUICK_MAX_ROWS, QUICK_MAX_WORK // self.work_per_row)

    @functools.cached_property
    def accepts(self) -> tuple[bool, bool, bool]:
        """(NaN, infinity, float64 beyond float32's range): what this model's input may hold, as its library allows.
        Most models take finite values only; tree models from libraries that route missing values say otherwise."""
        params = self.manifest.params
        return bool(params.get("accepts_nan")), bool(params.get("accepts_inf")), not params.get("float32_range", False)

    def first_refused_row(self, X: np.ndarray) -> int:
        """The first row of X holding a value this model refuses, or -1."""
        accepts = self.accepts
        if accepts == (False, False, True):
            return int(first_nonfinite_row(X))
        return int(first_refused_row(X, accepts[0], accepts[1], not accepts[2]))

    def refusal(self, X: np.ndarray, row: int) -> str:
        """What is wrong with row `row` of X, in words, for the error message."""
        values = X[row]
        if self.accepts == (False, False, True):
            return "holds NaN or infinity"
        if np.isnan(values).any() and not self.accepts[0]:
            return "holds NaN"
        if np.isinf(values).any() and not self.accepts[1]:
            return "holds infinity"
        if np.isinf(values).any() or np.isnan(values).any():
            return "holds NaN or infinity"
        return "holds a value beyond float32's range, which this model's library rounds to infinity and refuses"

    @functools.cached_property
    def description(self) -> str:
        """How error messages name this model version (built once, not per request)."""
        return f"model '{self.name}' version {self.version}"

    def close(self) -> None:
        """Release what a swapped-out version holds (its batching thread)."""
        if self.batcher is not None:
            self.batcher.close()

    def warm_up(self) -> None:
        """Compile the kernels for the exact array types requests bring (read-only views)."""
        rng = np.random.default_rng(0)
        for rows in WARM_UP_ROWS:
            data = rng.standard_normal((rows, self.manifest.n_features)).astype(self.input_dtype).tobytes()
            X = np.frombuffer(data, dtype=self.input_dtype).reshape(rows, -1)
            self.first_refused_row(X)
            results = self.scorer.score(X, self.output_names)
            writer = planned_writer(self, self.output_names, results)
            if writer is not None:
                write, size = writer
                write(X, np.empty(size, dtype=np.uint8))


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

    @functools.cached_property
    def default_version(self) -> str | None:
        ready = [v for v, s in self.versions.items() if s.state == READY]
        return max(ready, key=int) if ready else None


class ModelRepository:
    def __init__(self, root: pathlib.Path | str, *, max_model_bytes: int = 4 << 30, follow_symlinks: bool = False) -> None:
        self.root = pathlib.Path(root)
        self.max_model_bytes = max_model_bytes
        self.follow_symlinks = follow_symlinks
        self._models: dict[str, ModelEntry] = {}
        self._write_lock = threading.Lock()
        self.load_failures: Counter[tuple[str, str]] = Counter()

    def load_all(self, names: list[str] | None = None) -> None:
        """Load the named models, or every model found under the root."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a directory")
        if names is None:
            names = model_names(self.root)
            hint = _layout_hint(self.root, names)
            if hint:
                log.warning("%s", hint)
        for name in names:
            try:
                self.load(name)
            except ModelNotFoundError as exc:
                log.error("cannot load model %s: %s", name, exc)
            except Exception:  # load() keeps model failures to the model; this is the last line of defence
                log.exception("cannot load model %s", name)

    def load(self, name: str) -> ModelEntry:
        """(Re)load one model per its version policy and swap it in atomically.

        Versions whose file is unchanged keep their loaded copy; new ones are
        loaded and warmed before the swap, so requests never see a cold model.
        If a version that was serving fails to reload, its previous copy keeps
        serving; the failure is kept as the version's reason.
        """
        model_dir = self.require_model_dir(name)
        with self._write_lock:  # one load at a time: the old entry must not change under us
            old = self._models.get(name, ModelEntry(name))
            entry = ModelEntry(name, self._load_versions(name, model_dir, old))
            self._models = {**self._models, name: entry}
        _close_dropped(old, entry)
        return entry

    def require_model_dir(self, name: str) -> pathlib.Path:
        """The model's folder; NOT_FOUND for a name that is invalid or could escape the repository."""
        if not is_model_name(name):
            raise ModelNotFoundError(f"{shown(name)} is not a valid model name")
        model_dir = self.root / name
        try:
            found = model_dir.is_dir()
        except OSError:  # e.g. a link into a folder this user may not read
            found = False
        if not found:
            raise ModelNotFoundError(f"model {shown(name)} is not in the repository {self.root}")
        return model_dir

    def check_inside(self, path: pathlib.Path, what: str) -> None:
        """Raise OutsideRepositoryError if `path` resolves outside the root, unless links out of it are followed."""
        if self.follow_symlinks:
            return
        if not path.resolve().is_relative_to(self.root.resolve()):  # resolved each time: the root may be a link that moves
            raise OutsideRepositoryError(
                f"{path}: the {what} leads out of the model repository through a symbolic link; start the server with --follow-symlinks to serve it"
            )

    def _load_versions(self, name: str, model_dir: pathlib.Path, old: ModelEntry) -> dict[str, VersionStatus]:
        try:  # a model must never take the server down with it, whatever its folder holds
            self.check_inside(model_dir, "model folder")
            self.check_inside(model_dir / CONFIG_FILE, CONFIG_FILE)
            config = read_model_config(model_dir)
            wanted = [str(v) for v in config.version_policy.select(version_numbers(model_dir))]
        except Exception as exc:
            return self._model_failed(name, old, exc)
        if not wanted:
            log.error("model %s: no version directory with a %s under %s", name, MODEL_FILE, model_dir)
            return {MODEL_LEVEL_VERSION: VersionStatus(MODEL_LEVEL_VERSION, UNAVAILABLE, f"no version directory with a {MODEL_FILE} matches the version policy")}
        statuses = {}
        for version in wanted:
            previous = old.versions.get(version)
            status = self._load_version(name, version, model_dir / version / MODEL_FILE, previous, config.dynamic_batching, config.drift)
            statuses[version] = status
        if not any(s.state == READY for s in statuses.values()):
            # keep the previous good versions serving beside the failures
            statuses = {**{v: s for v, s in old.versions.items() if s.state == READY}, **statuses}
        return dict(sorted(statuses.items(), key=lambda item: _version_key(item[0])))

    def _model_failed(self, name: str, old: ModelEntry, exc: Exception) -> dict[str, VersionStatus]:
        """The statuses after the whole model failed to load: the versions serving keep serving, with the reason."""
        reason = failure_reason(exc)
        log.error("model %s failed to load: %s", name, reason, exc_info=not isinstance(exc, EXPECTED_FAILURES))
        self.load_failures[(name, MODEL_LEVEL_VERSION)] += 1
        serving = {v: replace(s, reason=f"reload failed, serving the previous copy: {reason}") for v, s in old.versions.items() if s.state == READY}
        return serving or {MODEL_LEVEL_VERSION: VersionStatus(MODEL_LEVEL_VERSION, UNAVAILABLE, reason)}

    def unload(self, name: str) -> None:
        """Stop serving a model; unloading one that is not loaded is a no-op (workers may differ)."""
        with self._write_lock:
            old = self._models.get(name)
            if old is None:
                return
            self._models = {k: v for k, v in self._models.items() if k != name}
        _close_dropped(old, ModelEntry(name))
        log.info("model %s unloaded", name)

    def ready_count(self) -> int:
        """Model versions ready to serve."""
        return sum(s.state == READY for e in self._models.values() for s in e.versions.values())

    def _load_version(
        self, name: str, version: str, path: pathlib.Path, previous: VersionStatus | None, batching: DynamicBatching | None, drift: Drift = Drift()
    ) -> VersionStatus:
        fingerprint = file_fingerprint(path)
        if previous is not None and previous.model is not None and (previous.model.fingerprint, previous.model.batching, previous.model.drift_config) == (fingerprint, batching, drift):
            return previous
        started = time.perf_counter()
        log.info("model %s version %s: loading, compiling its kernels if this machine has not cached them", name, version)
        try:
            self.check_inside(path, "model file")
            if fingerprint[1] > self.max_model_bytes:
                raise ModelFormatError(path, f"is {fingerprint[1]} bytes, more than the --max-model-mb limit ({self.max_model_bytes} bytes)")
            model = Model.load(name, version, path, batching, drift)
        except Exception as exc:  # a model must never take the server down with it
            reason = failure_reason(exc)
            log.error("model %s version %s failed to load: %s", name, version, reason, exc_info=not isinstance(exc, EXPECTED_FAILURES))
            self.load_failures[(name, version)] += 1
            if previous is not None and previous.model is not None:
                return VersionStatus(version, READY, f"reload failed, serving the previous copy: {reason}", previous.model)
            return VersionStatus(version, UNAVAILABLE, reason)
        log.info("model %s version %s ready (%s, kind %s) in %.3fs", name, version, model.manifest.estimator, model.manifest.kind, time.perf_counter() - started)
        return VersionStatus(version, READY, model=model)

    def get(self, name: str, version: str = "") -> Model:
        """The model that serves a request, or the error that explains why none does."""
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFoundError(f"unknown model {shown(name)}{self._known_models()}")
        if not version:
            default = entry.default_version
            if default is None:
                reasons = "; ".join(f"version {s.version}: {s.reason}" for s in entry.versions.values())
                raise ModelNotReadyError(f"model '{name}' has no ready version ({reasons})")
            version = default
        status = entry.versions.get(version)
        if status is None:
            raise ModelNotFoundError(f"model '{name}' has no version {shown(version)} (versions: {sorted(entry.versions, key=_version_key)})")
        if status.model is None:
            raise ModelNotReadyError(f"model '{name}' version {version} is not ready: {status.reason}")
        return status.model

    @property
    def snapshot(self) -> Mapping[str, ModelEntry]:
        """The models being served, as one immutable mapping: every load or unload replaces it."""
        return self._models

    def _known_models(self) -> str:
        """The models there are, for a NOT_FOUND message: their names when few."""
        names = sorted(self._models)
        if not names:
            return " (no model is loaded)"
        if len(names) <= MAX_NAMES_IN_ERRORS:
            return f" (models: {', '.join(names)})"
        return f" ({len(names)} models; RepositoryIndex lists them)"

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFoundError(f"unknown model {shown(name)}{self._known_models()}")
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
        return [name for name in model_names(self.root) if name not in self._models]




def _close_dropped(old: ModelEntry, new: ModelEntry) -> None:
    kept = {id(s.model) for s in new.versions.values()}
    for status in old.versions.values():
        if status.model is not None and id(status.model) not in kept:
            status.model.close()


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def _layout_hint(root: pathlib.Path, names: list[str]) -> str | None:
    """What an operator needs to hear when the repository holds no model folder, or is itself a model or version folder."""
    expected = f"no models in {root}: expected {root}/<model name>/<version number>/{MODEL_FILE}"
    if (root / MODEL_FILE).is_file():
        return f"{expected}; {root} holds a {MODEL_FILE} itself: give the repository two folders above it"
    if names and all(name.isdigit() and (root / name / MODEL_FILE).is_file() for name in names):
        return f"{expected}; {root} holds version folders: it looks like a model folder, give the folder above it"
    return None if names else expected
