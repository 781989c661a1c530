"""Projections: kind "projection" (PCA, TruncatedSVD), its exporter and its scorer.

Arrays (float64; n = the final kernel's input width, k = n_components), besides the
input side's (modeling/scorer_support.py, `Inputs`: shift, scale, offset, stages):
    components_t [n, k], bias [k], divisor [k]
                           transform = (x' @ components_t - bias) / divisor
Outputs: transform, in the input's float datatype, [-1, k].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import decomposition
from tensorwire.server.modeling.pipelines import STEP_MAPS, Plan, Preprocessing, Projection, ProjectStage, exported, maps_of_steps, plan
from tensorwire.server.modeling.registry import Exported, describe, exports, register
from tensorwire.server.modeling.scorer_support import FLOAT_DTYPES, Inputs, check_outputs, check_request, compiles_parallel, is_parallel, one_row, projection
from tensorwire.server.repository.model_format import Manifest, TensorSpec


def projection_outputs(datatype: str, n_components: int) -> list[TensorSpec]:
    """The outputs a projection declares."""
    return [TensorSpec("transform", datatype, [-1, n_components])]


class ProjectionScorer:
    """transform = (x' @ components_t - bias) / divisor, x' the (staged and) pre-scaled rows."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        self.proj = projection(manifest, arrays, "", self.inputs.width)
        check_outputs(manifest, projection_outputs(manifest.input_datatype, self.proj[0].shape[1]))
        if compiles_parallel():  # the parallel variants too, where a batch can take them
            self._transform(one_row(manifest), parallel=True)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, ("transform",), outputs, X)
        transform = self._transform(X, is_parallel(X))
        return [transform for _ in outputs]

    def _transform(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        Xk = self.inputs(X, parallel)
        out = np.empty((X.shape[0], self.proj[0].shape[1]))
        kernel = decomposition.project_parallel if parallel else decomposition.project
        kernel(Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, *self.proj, out)
        return out.astype(self.dtype, copy=False)


@register("projection")
def projection_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> ProjectionScorer:
    return ProjectionScorer(manifest, arrays)


@exports("sklearn.decomposition.PCA", "sklearn.decomposition.TruncatedSVD", kind="projection")
def _projection(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    final = STEP_MAPS[type(estimator)](estimator)
    assert isinstance(final, Projection)
    name = describe(estimator)
    step_maps = [*maps_of_steps(prep, name), (name, final)]
    try:
        result = plan(step_maps, final.components_t.shape[0])
    except ValueError as exc:
        raise ValueError(f"tensorwire cannot export Pipeline ending in {name}: {exc}") from None
    # The plan ends in a project stage holding the final projection (composed with any before it): that stage is the kernel.
    last = result.stages[-1]
    assert isinstance(last, ProjectStage)
    own = Plan(result.stages[:-1], last.prefix, result.n_features)
    return exported("projection", own, projection_outputs(datatype, final.components_t.shape[1]), last.projection.as_arrays(""), {})
