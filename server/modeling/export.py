"""Export fitted scikit-learn estimators as tensorwire models (model.npz).

`export` splits a Pipeline into its preprocessing steps and its final estimator,
finds the final estimator's exporter in the registry (every family registers its
own, modeling/registry.py) and writes what it returns. The steps reach the exporter
as a `Preprocessing` (modeling/pipelines.py) to fold or plan, with what else the exporter may use: the training
rows passed as `background` (checked once here, `training_rows`) and whether the model serves alone (`explain`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tensorwire.server.modeling.pipelines import PREPROCESSORS, TRANSFORMS, Affine, Preprocessing
from tensorwire.server.modeling.reference_profile import OutputProfile, main_output, profile_output, profile_rows
from tensorwire.server.modeling.registry import EXPORTERS, EXPORTERS_BY_NAME, FILE_FORMATS, Exported, build_scorer, describe, exporter_of, load_families
from tensorwire.server.repository.model_format import INPUT_NAME, Manifest, TensorSpec, array_spec, save_model

INPUT_DATATYPES = {"float32": "FP32", "float64": "FP64"}
HEAD_BYTES = 4096  # what file formats are recognised from


class PickleNotTrustedError(ValueError):
    """A pickle (joblib) file was to be loaded without the caller's explicit trust."""


# --- entry points ---------------------------------------------------------------


def export(estimator: Any, version_dir: os.PathLike[str] | str, *, dtype: Any = "float32", background: Any = None) -> pathlib.Path:
    """Write a fitted estimator (or Pipeline of scalers then estimator) as version_dir/model.npz.

    `background`: the training data (array-like or DataFrame, rows x features: the raw input columns, before any
    pipeline step). A linear model explains each prediction against its mean (the `contributions` output), and every
    model stores its reference profile (server/modeling/reference_profile.py): the inputs' bins, and its main output's classes
    or score bins as its own scorer gives them on these rows, which the server measures input and output drift against.
    """
    datatype = _input_datatype(dtype)
    rows = None if background is None else training_rows(background, estimator)
    exported, described = export_nested(estimator, datatype, explain=True, background=rows)
    if rows is not None and rows.shape[1] != exported.n_features:  # for estimators that do not say their width
        raise ValueError(
            f"tensorwire cannot export {described} with this background: it has {rows.shape[1]} columns, "
            f"the model reads {exported.n_features} input features"
        )
    if rows is not None:
        exported = _with_reference_profile(exported, described, rows, getattr(estimator, "feature_names_in_", None), datatype)
    return _save(exported, described, datatype, version_dir)


SCORE_ROWS = 4096  # reference rows scored at once for the output's profile


def _with_reference_profile(exported: Exported, described: str, rows: np.ndarray, feature_names: Any, datatype: str) -> Exported:
    """The exported model with the reference profile of its training rows, and of its main output on them, added
    (arrays no scorer reads)."""
    profile = profile_rows(rows, None if feature_names is None else [str(n) for n in feature_names], datatype)
    profile = dataclasses.replace(profile, output=_output_profile(exported, described, rows, datatype))
    arrays, params = profile.arrays(), profile.params()
    clash = sorted(set(arrays) & set(exported.arrays)) + sorted(set(params) & set(exported.params))
    if clash:
        raise RuntimeError(f"the exporter of kind '{exported.kind}' wrote {clash}, which the reference profile uses")
    return dataclasses.replace(exported, arrays={**exported.arrays, **arrays}, params={**exported.params, **params})


def _output_profile(exported: Exported, described: str, rows: np.ndarray, datatype: str) -> OutputProfile | None:
    """The main output's reference distribution: the model's own scorer, as the server runs it, on the reference rows
    it accepts (whatever the estimator: a Booster, a DBSCAN, an XGBoost file). None where the main output has several
    columns (reference_profile.main_output) or more classes than are profiled."""
    main = main_output(exported.outputs)
    if main is None:
        return None
    X = np.ascontiguousarray(rows, dtype=np.float32 if datatype == "FP32" else np.float64)
    accepted = np.isfinite(X) | (np.isnan(X) & bool(exported.params.get("accepts_nan")))
    X = np.ascontiguousarray(X[accepted.all(axis=1)])
    if not len(X):
        return None
    scorer = build_scorer(_manifest(exported, described, datatype), exported.arrays)
    values = np.concatenate([scorer.score(X[start : start + SCORE_ROWS], [main.name])[0] for start in range(0, len(X), SCORE_ROWS)])
    return profile_output(values, main.name, main.datatype, exported.params.get("classes"))


def training_rows(background: Any, estimator: Any) -> np.ndarray:
    """`background` as float64 rows x features, checked against the estimator's input: 2-d, numeric, at least one
    row, no infinity (NaN is a missing value and stays), as many columns as it was fitted on, in its column order."""
    if sparse.issparse(background):
        raise TypeError("background must be dense rows x features (a sparse matrix was given: call .toarray())")
    try:
        rows = np.array(background, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"background must hold numbers, rows x features ({exc})") from None
    if rows.ndim != 2:
        raise ValueError(f"background must be 2-d, rows x features, not of shape {list(rows.shape)} (one feature: reshape(-1, 1))")
    if rows.shape[0] == 0:
        raise ValueError("background has no rows")
    infinite = np.argwhere(np.isinf(rows))
    if infinite.size:
        row, column = infinite[0]
        raise ValueError(f"background holds infinity (first at row {row}, column {column}); NaN may stand for a missing value")
    width = getattr(estimator, "n_features_in_", None)
    if isinstance(width, (int, np.integer)) and rows.shape[1] != width:
        raise ValueError(
            f"background has {rows.shape[1]} columns, {type(estimator).__name__} was fitted on {width} "
            "(background is the training data in the raw input columns, before any pipeline step)"
        )
    names = getattr(estimator, "feature_names_in_", None)
    columns = getattr(background, "columns", None)
    if names is not None and columns is not None and [str(c) for c in columns] != [str(n) for n in names]:
        raise ValueError(
            f"background's columns {[str(c) for c in columns]} are not the ones {type(estimator).__name__} was fitted on, "
            f"in its order: {[str(n) for n in names]}"
        )
    return rows


def _manifest(exported: Exported, described: str, datatype: str) -> Manifest:
    return Manifest(
        kind=exported.kind,
        estimator=described,
        inputs=[TensorSpec(INPUT_NAME, datatype, [-1, exported.n_features])],
        outputs=exported.outputs,
        arrays={name: array_spec(a) for name, a in exported.arrays.items()},
        params=exported.params,
    )


def _save(exported: Exported, described: str, datatype: str, version_dir: os.PathLike[str] | str) -> pathlib.Path:
    return save_model(version_dir, _manifest(exported, described, datatype), exported.arrays)


def export_nested(
    estimator: Any, datatype: str, prep: Preprocessing | None = None, *, explain: bool = False, background: np.ndarray | None = None
) -> tuple[Exported, str]:
    """(what its exporter makes of a fitted estimator or Pipeline, its name for manifests), for input datatype "FP32" or "FP64".

    `export` writes that, with `explain` (the model serves alone: it may offer `contributions`) and the checked
    `background` rows (`training_rows`); a meta-estimator's exporter (families/calibration.py) calls it for each
    estimator it wraps, with `prep` the steps before the meta-estimator, which then run before the inner estimator's own steps.
    """
    load_families()  # the pipeline steps a family accepts are known once it is imported
    steps, (final_name, final) = _split_pipeline(estimator)
    in_pipeline = isinstance(estimator, Pipeline)
    where = f"step '{final_name}' ({type(final).__name__}) of Pipeline" if in_pipeline else type(final).__name__
    entry = exporter_of(type(final))
    if entry is None:
        supported = ", ".join(sorted([cls.__name__ for cls in EXPORTERS] + [name.rsplit(".", 1)[-1] for name in EXPORTERS_BY_NAME]))
        raise TypeError(
            f"tensorwire cannot export {where}: no exporter for {type(final).__name__} (supported: {supported})"
        )
    _require_fitted(final, where)
    before = [] if prep is None else list(prep.steps)
    exported = entry.exporter(final, _fold_steps(before + steps, describe(final), explain, background), datatype)
    if exported.kind != entry.kind:
        raise RuntimeError(f"the exporter of {type(final).__name__} wrote kind '{exported.kind}', registered as '{entry.kind}'")
    names = [type(step).__name__ for _, step in steps] + [describe(final)]
    return exported, f"Pipeline({', '.join(names)})" if in_pipeline else names[-1]


def export_file(
    model_path: os.PathLike[str] | str,
    version_dir: os.PathLike[str] | str,
    *,
    source: str | None = None,
    trust_pickle: bool = False,
    dtype: Any = "float32",
    background: Any = None,
    feature_names: list[str] | None = None,
) -> pathlib.Path:
    """Export a model file: an XGBoost JSON/UBJ or LightGBM text model read as data, or (with trust_pickle) a joblib/pickle file.

    `source` names the kind ("xgboost", "lightgbm", "joblib"); without it the kind is recognised from the file's content.
    `background`: the training rows, as `export`'s; `feature_names` name their columns in the drift metrics of an
    XGBoost or LightGBM model (a joblib estimator's own `feature_names_in_` name them, as `export` does).
    """
    datatype = _input_datatype(dtype)
    load_families()
    if source is None:
        with open(model_path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        source = next((f.name for f in FILE_FORMATS.values() if f.recognises(head)), "joblib")
    if source == "joblib":
        return export_pickle_file(model_path, version_dir, trust_pickle=trust_pickle, dtype=dtype, background=background)
    file_format = FILE_FORMATS.get(source)
    if file_format is None:
        raise ValueError(f"unknown model file kind '{source}' (known: {', '.join(sorted(FILE_FORMATS) + ['joblib'])})")
    exported, described = file_format.export(str(model_path), datatype)
    if background is not None:
        rows = training_rows(background, None)
        if rows.shape[1] != exported.n_features:
            raise ValueError(f"background has {rows.shape[1]} columns, the model in {model_path} reads {exported.n_features} input features")
        if feature_names is not None and len(feature_names) != rows.shape[1]:
            raise ValueError(f"{len(feature_names)} feature names for {rows.shape[1]} background columns")
        exported = _with_reference_profile(exported, described, rows, feature_names, datatype)
    return _save(exported, described, datatype, version_dir)


def export_pickle_file(
    model_path: os.PathLike[str] | str,
    version_dir: os.PathLike[str] | str,
    *,
    trust_pickle: bool,
    dtype: Any = "float32",
    background: Any = None,
) -> pathlib.Path:
    """Unpickle an estimator saved with joblib (only with trust_pickle=True) and export it (`background` as `export`'s)."""
    if not trust_pickle:
        raise PickleNotTrustedError(
            f"refusing to load {model_path}: unpickling a joblib/pickle file runs arbitrary code from it. "
            "Load only files you made or trust, and say so explicitly with --trust-pickle "
            "(trust_pickle=True); tensorwire's own model.npz never needs this."
        )
    import joblib  # only the trusted path needs it

    return export(joblib.load(model_path), version_dir, dtype=dtype, background=background)


# --- pipelines ------------------------------------------------------------------


def _input_datatype(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in INPUT_DATATYPES:
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    return INPUT_DATATYPES[name]


def _flatten(pipeline: Pipeline, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, step) pairs of a possibly nested Pipeline, named as set_params names them."""
    for name, step in pipeline.steps:
        if isinstance(step, Pipeline):
            yield from _flatten(step, f"{prefix}{name}__")
        else:
            yield f"{prefix}{name}", step


def _split_pipeline(estimator: Any) -> tuple[list[tuple[str, Any]], tuple[str, Any]]:
    """(preprocessing steps, (name, final estimator)); a bare estimator has no steps."""
    if not isinstance(estimator, Pipeline):
        return [], ("", estimator)
    steps = list(_flatten(estimator))
    final_name, final = steps[-1]
    if final is None or (isinstance(final, str) and final == "passthrough"):
        raise ValueError(
            f"tensorwire cannot export a Pipeline whose last step '{final_name}' is {final!r}: it needs an estimator"
        )
    kept = [
        (name, step)
        for name, step in steps[:-1]
        if step is not None and not (isinstance(step, str) and step == "passthrough")
    ]
    for name, step in kept:
        where = f"step '{name}' ({type(step).__name__}) of Pipeline"
        if type(step) not in PREPROCESSORS and type(step) not in TRANSFORMS:
            supported = ", ".join(sorted(cls.__name__ for cls in PREPROCESSORS))
            others = ", ".join(sorted(cls.__name__ for cls in TRANSFORMS))
            raise TypeError(
                f"tensorwire cannot export {where}: only {supported} (they fold into the final estimator's "
                f"parameters) and {others} can precede the final estimator"
            )
        _require_fitted(step, where)
    return kept, (final_name, final)


def _fold_steps(steps: list[tuple[str, Any]], final: str, explain: bool, background: np.ndarray | None) -> Preprocessing | None:
    """The steps with each scaler's map computed (so a scaler that cannot fold is refused here, whatever follows it);
    None when there are no steps and nothing else to tell the exporter."""
    affines: list[Affine | None] = []
    for name, step in steps:
        fold = PREPROCESSORS.get(type(step))
        try:
            affines.append(None if fold is None else fold(step))
        except ValueError as exc:
            raise ValueError(
                f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline: {exc}"
            ) from None
    if not (steps or explain or background is not None):
        return None
    return Preprocessing(tuple(steps), tuple(affines), final, explain, background)


def _require_fitted(estimator: Any, where: str) -> None:
    if not hasattr(estimator, "fit"):  # a trained model object without an estimator API (an XGBoost or LightGBM Booster)
        return
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise ValueError(f"tensorwire cannot export {where}: it is not fitted (call fit first)") from None
