"""Plumbing every family's scorer shares: checking a manifest's arrays and outputs, class labels, and the input side.

The input side (`Inputs`) of every non-linear model: zero or more stages (a pass
the final kernel cannot fuse: a projection, or a Normalizer), then the final
kernel's fused pre-scaling x' = (x - shift) * scale + offset.

Arrays (float64; n = the final kernel's input width):
    shift, scale, offset   [n]      the final kernel's fused pre-scaling
    stage{i}_shift, stage{i}_scale, stage{i}_offset [m_i]
                           stage i's own fused pre-scaling of its m_i-wide input
    stage{i}_components_t [m_i, m_{i+1}], stage{i}_bias, stage{i}_divisor [m_{i+1}]
                           a "project" stage's projection: (x' @ components_t - bias) / divisor
Params (JSON):
    stages                 list, in order, of {"op": "project"} or {"op": "normalize", "norm": "l1" | "l2" | "max"}
                           (kinds without stages may leave it out)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import config, decomposition
from tensorwire.server.repository.model_format import MODEL_FILE, Manifest, ModelFormatError, TensorSpec

FLOAT_DTYPES: dict[str, type[np.floating[Any]]] = {"FP32": np.float32, "FP64": np.float64}


LABEL_DTYPES: dict[str, Any] = {"INT64": np.int64, "FP64": np.float64, "BOOL": np.bool_, "BYTES": object}
NORMS = ("l1", "l2", "max")


# scikit-learn's _handle_zeros_in_scale: a row norm below this counts as zero and divides by 1 instead.
_ZERO_NORM = 10 * float(np.finfo(np.float64).eps)


def invalid(manifest: Manifest, problem: str) -> ModelFormatError:
    return ModelFormatError(MODEL_FILE, f"{manifest.kind} model ({manifest.estimator}): {problem}")


def check_outputs(manifest: Manifest, expected: list[TensorSpec]) -> None:
    if manifest.outputs != expected:
        raise invalid(manifest, f"outputs {manifest.outputs} differ from what this model produces: {expected}")


def check_request(manifest: Manifest, known: Collection[str], outputs: Sequence[str], X: np.ndarray) -> None:
    """Every output asked for is one of `known`, and X has the model's width (what every scorer checks first)."""
    for name in outputs:
        if name not in known:
            raise _unknown_output(manifest, name)
    # The kernels index coef by X's columns without bounds checks: a wrong width must never reach them.
    if X.ndim != 2 or X.shape[1] != manifest.n_features:
        raise ValueError(f"model ({manifest.estimator}) expects input [-1, {manifest.n_features}], got {list(X.shape)}")


def _unknown_output(manifest: Manifest, name: str) -> ValueError:
    return ValueError(
        f"model ({manifest.estimator}) has no output '{name}' (it has {[o.name for o in manifest.outputs]})"
    )


def label_array(manifest: Manifest, classes: list[Any], label_datatype: str) -> np.ndarray:
    """A classifier's labels as a read-only array of their datatype (BYTES: utf-8 bytes objects)."""
    try:
        if label_datatype == "BYTES":
            labels = np.empty(len(classes), dtype=object)
            labels[:] = [str(c).encode("utf-8") for c in classes]
        else:
            labels = np.array(classes, dtype=LABEL_DTYPES[label_datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid(manifest, f"classes do not fit label_datatype {label_datatype}: {exc}") from None
    labels.setflags(write=False)
    return labels


def float_array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """arrays[name] as a read-only float64 C array of the given shape (-1: any length), or ModelFormatError."""
    return _array(manifest, arrays, name, shape, np.float64)


def int_array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """arrays[name] as a read-only int64 C array of the given shape (-1: any length), or ModelFormatError."""
    return _array(manifest, arrays, name, shape, np.int64)


def int32_array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """arrays[name] as a read-only int32 C array of the given shape (-1: any length), or ModelFormatError."""
    return _array(manifest, arrays, name, shape, np.int32)


def _array(manifest: Manifest, arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    if name not in arrays:
        raise invalid(manifest, f"array '{name}' is missing")
    array = arrays[name]
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape, strict=True)):
        expected = ["any" if d == -1 else d for d in shape]
        raise invalid(manifest, f"array '{name}' has shape {list(array.shape)}, expected {expected}")
    if np.dtype(dtype).kind == "i" and array.dtype.kind not in "iu":
        raise invalid(manifest, f"array '{name}' must hold integers, not {array.dtype}")
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
        raise invalid(manifest, f"array '{prefix}divisor' holds zeros")
    return components_t, bias, divisor


def one_row(manifest: Manifest) -> np.ndarray:
    """A read-only one-row input of the model's dtype, as a request delivers it (for compiling at load)."""
    dtype = FLOAT_DTYPES[manifest.input_datatype]
    return np.frombuffer(np.zeros(manifest.n_features, dtype=dtype).tobytes(), dtype=dtype).reshape(1, -1)


def is_parallel(X: np.ndarray) -> bool:
    """Whether a batch takes the kernels' parallel variants: large enough, and more than one kernel thread (read at call time, so tests may change both)."""
    return X.shape[0] >= config.PARALLEL_MIN_ROWS and config.parallel_enabled()


def compiles_parallel() -> bool:
    """Whether a scorer compiles its kernels' parallel variants at load: only where a batch can take them (is_parallel)."""
    return config.parallel_enabled()


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
            raise invalid(manifest, f"params.stages must be a list, not {specs!r}")
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
                raise invalid(manifest, f"stage {i} {spec!r} is not a project or normalize (l1, l2, max) stage")
        self.width = width  # the final kernel's input width
        self.shift, self.scale, self.offset = affine(manifest, arrays, "", width)

    def __call__(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        """The rows the final kernel reads: X itself when there are no stages."""
        for stage in self.stages:
            X = stage(X, parallel)
        return X
