"""Scorers for projections (kind "projection": PCA, TruncatedSVD) and the input side all non-linear kinds share.

Every non-linear model's input goes through `Inputs`: zero or more stages (a pass
the final kernel cannot fuse: a projection, or a Normalizer), then the final
kernel's fused pre-scaling x' = (x - shift) * scale + offset.

Arrays (float64; n = the final kernel's input width, k = n_components):
    shift, scale, offset   [n]      the final kernel's fused pre-scaling
    components_t [n, k], bias [k], divisor [k]
                           transform = (x' @ components_t - bias) / divisor
    stage{i}_shift, stage{i}_scale, stage{i}_offset [m_i]
                           stage i's own fused pre-scaling of its m_i-wide input
    stage{i}_components_t [m_i, m_{i+1}], stage{i}_bias, stage{i}_divisor [m_{i+1}]
                           a "project" stage's projection, laid out as the final one
Params (JSON):
    stages                 list, in order, of {"op": "project"} or {"op": "normalize", "norm": "l1" | "l2" | "max"}
                           (kinds without stages may leave it out)
Outputs: transform, in the input's float datatype, [-1, k].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import config, decomposition
from tensorwire.server.model_format import Manifest, TensorSpec
from tensorwire.server.scorers_linear import FLOAT_DTYPES, _check_outputs, _check_request, _invalid
from tensorwire.server.scoring import register

NORMS = ("l1", "l2", "max")
# scikit-learn's _handle_zeros_in_scale: a row norm below this counts as zero and divides by 1 instead.
_ZERO_NORM = 10 * float(np.finfo(np.float64).eps)


def projection_outputs(datatype: str, n_components: int) -> list[TensorSpec]:
    """The outputs a projection declares."""
    return [TensorSpec("transform", datatype, [-1, n_components])]


def float_array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """arrays[name] as a read-only float64 C array of the given shape (-1: any length), or ModelFormatError."""
    return _array(manifest, arrays, name, shape, np.float64)


def int_array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """arrays[name] as a read-only int64 C array of the given shape (-1: any length), or ModelFormatError."""
    return _array(manifest, arrays, name, shape, np.int64)


def _array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    if name not in arrays:
        raise _invalid(manifest, f"array '{name}' is missing")
    array = arrays[name]
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape, strict=True)):
        expected = ["any" if d == -1 else d for d in shape]
        raise _invalid(manifest, f"array '{name}' has shape {list(array.shape)}, expected {expected}")
    if np.dtype(dtype).kind == "i" and array.dtype.kind not in "iu":
        raise _invalid(manifest, f"array '{name}' must hold integers, not {array.dtype}")
    converted = np.ascontiguousarray(array, dtype=dtype)
    # Read-only like request tensors and the memory-mapped originals: one numba specialisation per kernel.
    converted.setflags(write=False)
    return converted


def affine(manifest: Manifest, arrays: dict[str, np.ndarray], prefix: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shift, scale, offset) stored under prefix, each [width]."""
    return tuple(float_array(manifest, arrays, f"{prefix}{part}", (width,)) for part in ("shift", "scale", "offset"))  # type: ignore[return-value]


def projection(manifest: Manifest, arrays: dict[str, np.ndarray], prefix: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components_t [width, k], bias [k], divisor [k]) stored under prefix; a zero divisor is refused."""
    components_t = float_array(manifest, arrays, f"{prefix}components_t", (width, -1))
    k = components_t.shape[1]
    bias = float_array(manifest, arrays, f"{prefix}bias", (k,))
    divisor = float_array(manifest, arrays, f"{prefix}divisor", (k,))
    if np.any(divisor == 0.0):
        raise _invalid(manifest, f"array '{prefix}divisor' holds zeros")
    return components_t, bias, divisor


def one_row(manifest: Manifest) -> np.ndarray:
    """A read-only one-row input of the model's dtype, as a request delivers it (for compiling at load)."""
    dtype = FLOAT_DTYPES[manifest.input_datatype]
    return np.frombuffer(np.zeros(manifest.n_features, dtype=dtype).tobytes(), dtype=dtype).reshape(1, -1)


def is_parallel(X: np.ndarray) -> bool:
    """Whether a batch is large enough for the kernels' parallel variants (read at call time, so tests may lower it)."""
    return X.shape[0] >= config.PARALLEL_MIN_ROWS


Stage = Callable[[np.ndarray, bool], np.ndarray]


class ProjectStage:
    """A projection pass into a new float64 array (PCA or TruncatedSVD before a kernel that cannot fuse it)."""

    def __init__(self, pre: tuple[np.ndarray, np.ndarray, np.ndarray], proj: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.pre, self.proj = pre, proj

    def __call__(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        out = np.empty((X.shape[0], self.proj[0].shape[1]))
        kernel = decomposition.project_parallel if parallel else decomposition.project
        kernel(X, *self.pre, *self.proj, out)
        return out


class NormalizeStage:
    """Normalizer: each row (after its fused pre-scaling) divided by its l1, l2 or max norm, as scikit-learn's normalize does."""

    def __init__(self, pre: tuple[np.ndarray, np.ndarray, np.ndarray], norm: str) -> None:
        self.pre, self.norm = pre, norm
        shift, scale, offset = pre
        self.identity = not (shift.any() or offset.any() or (scale != 1.0).any())

    def __call__(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        Y = np.array(X, dtype=np.float64)  # a private copy: the request's rows are read-only
        if not self.identity:
            shift, scale, offset = self.pre
            Y -= shift
            Y *= scale
            Y += offset
        if self.norm == "l2":
            norms = np.sqrt(np.einsum("ij,ij->i", Y, Y))
        elif self.norm == "l1":
            norms = np.abs(Y).sum(axis=1)
        else:
            norms = np.abs(Y).max(axis=1)
        norms[norms < _ZERO_NORM] = 1.0
        Y /= norms[:, None]
        return Y


class Inputs:
    """A model's input side: its stages in order, then the final kernel's fused pre-scaling (shift, scale, offset)."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        specs = manifest.params.get("stages", [])
        if not isinstance(specs, list):
            raise _invalid(manifest, f"params.stages must be a list, not {specs!r}")
        self.stages: list[Stage] = []
        width = manifest.n_features
        for i, spec in enumerate(specs):
            op = spec.get("op") if isinstance(spec, dict) else None
            pre = affine(manifest, arrays, f"stage{i}_", width)
            if op == "project":
                proj = projection(manifest, arrays, f"stage{i}_", width)
                self.stages.append(ProjectStage(pre, proj))
                width = proj[0].shape[1]
            elif op == "normalize" and spec.get("norm") in NORMS:
                self.stages.append(NormalizeStage(pre, spec["norm"]))
            else:
                raise _invalid(manifest, f"stage {i} {spec!r} is not a project or normalize (l1, l2, max) stage")
        self.width = width  # the final kernel's input width
        self.shift, self.scale, self.offset = affine(manifest, arrays, "", width)

    def __call__(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        """The rows the final kernel reads: X itself when there are no stages."""
        for stage in self.stages:
            X = stage(X, parallel)
        return X


class ProjectionScorer:
    """transform = (x' @ components_t - bias) / divisor, x' the (staged and) pre-scaled rows."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        self.proj = projection(manifest, arrays, "", self.inputs.width)
        _check_outputs(manifest, projection_outputs(manifest.input_datatype, self.proj[0].shape[1]))
        self._transform(one_row(manifest), parallel=True)  # compile the parallel variant at load too

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        _check_request(self.manifest, ("transform",), outputs, X)
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
