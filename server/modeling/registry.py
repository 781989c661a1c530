"""The registries every model family plugs into: model kind -> scorer, estimator type -> exporter.

A family is one module in `tensorwire.server.families` (see that package): it
registers its scorers with `@register("kind")` and its exporters with
`@exports("sklearn.module.EstimatorType", ..., kind="kind")`. `load_families` imports
every module of that package, so adding a family touches no list; dispatch is by
these registries, never by an if-ladder over kinds. Families are imported on first
use, so the client never pays for numba; estimator types are registered by their
dotted paths (`ClassTable`), so a serving process never pays for scikit-learn.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from tensorwire.server.repository.model_format import Manifest, ModelFormatError, TensorSpec

if TYPE_CHECKING:  # scikit-learn is only needed where an exporter runs
    from tensorwire.server.modeling.pipelines import Preprocessing

FAMILIES_PACKAGE = "tensorwire.server.families"


class Scorer(Protocol):
    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        """The named outputs for the rows of X, in the order asked.

        X is a C-contiguous, possibly read-only, 2-D array of the model's input
        dtype, with at least one row and only finite values. Each returned array
        has the datatype and shape (batch dimension = len(X)) that the manifest
        declares for that output.
        """
        ...


# A scorer may also offer work_per_row: a row's cost in multiply-adds, where its parameter count (the default
# estimate, server/repository/model_repository.py) says little of it (a tree model reads a path per tree, not every node).
# A scorer may also offer response_writer(outputs, template, offsets) -> ResponseWriter | None: whole
# responses for one request plan in one kernel call (server/inference/request_plans.py; the linear scorers do).
# writer(X, out) -> the first row of X holding NaN or infinity, or -1 once `out` holds the whole response.
ResponseWriter = Callable[[np.ndarray, np.ndarray], int]

ScorerFactory = Callable[[Manifest, dict[str, np.ndarray]], Scorer]
SCORERS: dict[str, ScorerFactory] = {}


@dataclass(frozen=True)
class Exported:
    """What an exporter makes of an estimator; `export` adds the input and writes the file."""

    kind: str
    n_features: int
    outputs: list[TensorSpec]
    arrays: dict[str, np.ndarray]
    params: dict[str, Any]


# An exporter gets the fitted estimator, the pipeline steps before it (None when there
# are none) and the input datatype ("FP32" or "FP64").
Exporter = Callable[[Any, "Preprocessing | None", str], Exported]


V = TypeVar("V")


def import_class(path: str) -> type:
    """The class a public dotted path names: "sklearn.svm.SVC" -> sklearn.svm's SVC."""
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class")
    return cls


class ClassTable(Mapping[type, V]):
    """A table keyed by classes, each registered as the class or as its public dotted path ("sklearn.svm.SVC").

    Registering a path imports nothing; the first lookup imports every path registered (only exporters look
    classes up, and their caller already holds such an object, so its library is imported anyway). Reads as
    a dict of real classes: `get`, `in`, `[]`, iteration, `items()`, `values()`.
    """

    def __init__(self, name: str, entries: Mapping[type | str, V] | None = None) -> None:
        self.name = name  # for messages
        self._classes: dict[type, V] = {}
        self._paths: dict[str, V] = {}  # registered, not imported yet
        self._lock = threading.Lock()
        for key, value in (entries or {}).items():
            self.add(key, value)

    def add(self, key: type | str, value: V) -> None:
        """Register value for a class or its dotted path; registering one twice is an error."""
        if self.declares(key):
            raise RuntimeError(f"{key if isinstance(key, str) else key.__name__} is registered twice in {self.name}")
        if isinstance(key, str):
            self._paths[key] = value
        else:
            self._classes[key] = value

    def declares(self, key: type | str) -> bool:
        """Whether key was registered as given (a class as a class, a path as a path), importing nothing."""
        return key in self._paths if isinstance(key, str) else key in self._classes

    def registered(self) -> dict[type | str, V]:
        """The entries as registered (the paths not imported yet as paths), importing nothing."""
        entries: dict[type | str, V] = dict(self._classes.items())
        entries.update(self._paths.items())
        return entries

    def _resolved(self) -> dict[type, V]:
        if self._paths:
            with self._lock:
                for path, value in list(self._paths.items()):
                    cls = import_class(path)
                    if cls in self._classes:
                        raise RuntimeError(f"{cls.__name__} is registered twice in {self.name} (once as {path})")
                    self._classes[cls] = value
                    del self._paths[path]
        return self._classes

    def __getitem__(self, cls: type) -> V:
        return self._resolved()[cls]

    def __iter__(self) -> Iterator[type]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())


class ClassSet(AbstractSet[type]):
    """A set of classes, registered as classes or dotted paths, imported on first lookup (see ClassTable)."""

    def __init__(self, name: str) -> None:
        self._table: ClassTable[None] = ClassTable(name)

    def add(self, key: type | str) -> None:
        self._table.add(key, None)

    def __contains__(self, cls: object) -> bool:
        return cls in self._table

    def __iter__(self) -> Iterator[type]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


@dataclass(frozen=True)
class ExporterEntry:
    exporter: Exporter
    kind: str  # the model kind it writes: a scorer must be registered for it


EXPORTERS: ClassTable[ExporterEntry] = ClassTable("EXPORTERS")
# Exporters for types of libraries tensorwire does not depend on (XGBoost, LightGBM), keyed by
# "module.QualifiedName": registering them imports nothing, and neither does a lookup (EXPORTERS would import
# the library): only a user who has the library has its objects.
EXPORTERS_BY_NAME: dict[str, ExporterEntry] = {}


@dataclass(frozen=True)
class FileFormat:
    """A model file kind `tensorwire export` reads as data (never as code): how to recognise it and how to read it."""

    name: str
    recognises: Callable[[bytes], bool]  # the file's first bytes -> whether it is this kind
    export: Callable[[str, str], tuple[Exported, str]]  # (path, input datatype) -> (the model, its name for the manifest)


FILE_FORMATS: dict[str, FileFormat] = {}


def register(kind: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register the scorer factory of a model kind."""

    def decorator(factory: ScorerFactory) -> ScorerFactory:
        if kind in SCORERS:
            raise RuntimeError(f"scorer kind '{kind}' registered twice")
        SCORERS[kind] = factory
        return factory

    return decorator


def exports(*types: type | str, kind: str) -> Callable[[Exporter], Exporter]:
    """Register an exporter for the given estimator types (classes or public dotted paths), writing models of `kind`."""

    def decorator(exporter: Exporter) -> Exporter:
        for cls in types:
            EXPORTERS.add(cls, ExporterEntry(exporter, kind))
        return exporter

    return decorator


def exports_named(*names: str, kind: str) -> Callable[[Exporter], Exporter]:
    """Register an exporter for types named "module.QualifiedName", of a library that may not be installed."""

    def decorator(exporter: Exporter) -> Exporter:
        for name in names:
            if name in EXPORTERS_BY_NAME:
                raise RuntimeError(f"{name} has two exporters")
            EXPORTERS_BY_NAME[name] = ExporterEntry(exporter, kind)
        return exporter

    return decorator


def exporter_of(cls: type) -> ExporterEntry | None:
    """The exporter registered for a type, by the type itself or by its name."""
    return EXPORTERS.get(cls) or EXPORTERS_BY_NAME.get(type_name(cls))


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


FileExporter = Callable[[str, str], tuple[Exported, str]]


def reads_files(name: str, recognises: Callable[[bytes], bool]) -> Callable[[FileExporter], FileExporter]:
    """Register a model file kind for `tensorwire export FILE DIR` (see FileFormat)."""

    def decorator(export: FileExporter) -> FileExporter:
        if name in FILE_FORMATS:
            raise RuntimeError(f"file format '{name}' registered twice")
        FILE_FORMATS[name] = FileFormat(name, recognises, export)
        return export

    return decorator


@functools.cache
def load_families() -> tuple[str, ...]:
    """Import every family module (each registers itself); their names."""
    package = importlib.import_module(FAMILIES_PACKAGE)
    names = tuple(f"{FAMILIES_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(name)
    return names


def build_scorer(manifest: Manifest, arrays: dict[str, np.ndarray], path: str = "") -> Scorer:
    load_families()
    factory = SCORERS.get(manifest.kind)
    if factory is None:
        raise ModelFormatError(path, f"unknown model kind '{manifest.kind}' (known: {sorted(SCORERS)})")
    return factory(manifest, arrays)


def describe(estimator: Any) -> str:
    """An estimator's name for messages and manifests: its class, and a meta-estimator's inner class."""
    inner = getattr(estimator, "estimator", None)
    if type(estimator).__name__ == "OneVsRestClassifier" and inner is not None:
        return f"OneVsRestClassifier({type(inner).__name__})"
    return type(estimator).__name__
