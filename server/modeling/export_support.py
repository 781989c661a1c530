"""Plumbing the families' exporters share: class labels and fitted attributes as plain arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_labels(classes: Any, where: str) -> tuple[str, list[Any]]:
    """(label_datatype, JSON labels) for estimator.classes_."""
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if classes.ndim != 1:
        raise ValueError(f"tensorwire cannot export {where}: classes_ is not one-dimensional (multilabel?)")
    if kind == "b":
        return "BOOL", [bool(c) for c in classes]
    if kind in "iu":
        if classes.size and (int(classes.max()) > np.iinfo(np.int64).max):
            raise ValueError(f"tensorwire cannot export {where}: class labels do not fit int64")
        return "INT64", [int(c) for c in classes]
    if kind == "f":
        if not np.isfinite(classes).all():
            raise ValueError(f"tensorwire cannot export {where}: class labels include NaN or infinity")
        return "FP64", [float(c) for c in classes]
    if kind == "U" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        return "BYTES", [str(c) for c in classes]
    raise TypeError(
        f"tensorwire cannot export {where}: class labels of type {classes.dtype} (use int, float, bool or str labels)"
    )


def refuse_multilabel(y_type: str | None, where: str) -> None:
    if y_type is not None and y_type.startswith("multilabel"):
        raise ValueError(f"tensorwire cannot export {where}: it was fitted on multilabel targets")


def f64(values: Any) -> np.ndarray:
    """A fitted attribute as a flat float64 copy."""
    return np.array(values, dtype=np.float64, copy=True).reshape(-1)


def dense(values: Any) -> np.ndarray:
    """A fitted attribute as a float64 array (a model fitted on sparse data stores sparse ones)."""
    from scipy import sparse  # exporting only: a serving process never imports scipy

    return np.asarray(values.toarray() if sparse.issparse(values) else values, dtype=np.float64)
