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
