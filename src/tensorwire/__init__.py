"""tensorwire: serve scikit-learn models over the Open Inference Protocol, scored by numba kernels."""

from __future__ import annotations

from typing import Any

from tensorwire.server.version import VERSION as __version__

__all__ = ["__version__", "export"]


def export(estimator: Any, version_dir: Any, *, dtype: str = "float32", background: Any = None) -> Any:
    """Write a fitted scikit-learn estimator as a tensorwire model (see tensorwire.server.modeling.export).

    background: the training data (rows x raw input columns); linear models then serve `contributions` against its mean.
    """
    from tensorwire.server.modeling.export import export as _export  # the server extra is needed only here

    return _export(estimator, version_dir, dtype=dtype, background=background)
