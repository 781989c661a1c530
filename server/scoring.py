"""The scorer registry: a model kind (the manifest's `kind`) -> the object that scores it.

A scorer holds a model's parameters and turns a validated input batch into the
requested outputs by calling kernels from `tensorwire.kernels`. Scorer modules
register themselves with `@register("kind")`; `build_scorer` dispatches on the
manifest, never through an if-ladder over kinds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from tensorwire.server.model_format import Manifest, ModelFormatError


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
# responses for one request plan in one kernel call (server/request_plans.py; the linear scorers do).
# writer(X, out) -> the first row of X holding NaN or infinity, or -1 once `out` holds the whole response.
ResponseWriter = Callable[[np.ndarray, np.ndarray], int]

ScorerFactory = Callable[[Manifest, dict[str, np.ndarray]], Scorer]
SCORERS: dict[str, ScorerFactory] = {}

# Modules whose import registers scorers; imported on first use so that the
# client never pays for numba.
SCORER_MODULES = ("tensorwire.server.scorers_linear", "tensorwire.server.scorers_svm", "tensorwire.server.scorers_cluster", "tensorwire.server.scorers_decomposition")


def register(kind: str) -> Callable[[ScorerFactory], ScorerFactory]:
    def decorator(factory: ScorerFactory) -> ScorerFactory:
        if kind in SCORERS:
            raise RuntimeError(f"scorer kind '{kind}' registered twice")
        SCORERS[kind] = factory
        return factory

    return decorator


def build_scorer(manifest: Manifest, arrays: dict[str, np.ndarray], path: str = "") -> Scorer:
    for module in SCORER_MODULES:
        importlib.import_module(module)
    factory = SCORERS.get(manifest.kind)
    if factory is None:
        raise ModelFormatError(path, f"unknown model kind '{manifest.kind}' (known: {sorted(SCORERS)})")
    return factory(manifest, arrays)
