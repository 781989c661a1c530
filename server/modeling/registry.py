"""The registries every model family plugs into: model kind -> scorer, estimator type -> exporter.

A family is one module in `tensorwire.server.families` (see that package): it
registers its scorers with `@register("kind")` and its exporters with
`@exports(EstimatorType, ..., kind="kind")`. `load_families` imports every module
of that package, so adding a family touches no list; dispatch is by these
registries, never by an if-ladder over kinds. Families are imported on first use,
so the client never pays for numba or scikit-learn.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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


@dataclass(frozen=True)
class ExporterEntry:
    exporter: Exporter
    kind: str  # the model kind it writes: a scorer must be registered for it


EXPORTERS: dict[type, ExporterEntry] = {}
# Exporters for types of libraries tensorwire does not depend on (XGBoost, LightGBM), keyed by
# "module.QualifiedName": registering them imports nothing, and only a user who has the library has its objects.
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


def exports(*types: type, kind: str) -> Callable[[Exporter], Exporter]:
    """Register an exporter for the given estimator types, writing models of `kind`."""

    def decorator(exporter: Exporter) -> Exporter:
        for cls in types:
            if cls in EXPORTERS:
                raise RuntimeError(f"{cls.__name__} has two exporters")
            EXPORTERS[cls] = ExporterEntry(exporter, kind)
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
