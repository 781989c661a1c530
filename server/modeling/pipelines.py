"""A Pipeline's preprocessing, as exporters use it: folded into a linear model's weights, or planned as kernel passes.

Linear models fold every step into their weights (`Preprocessing.fold`): runs of
scalers as one `Affine`, PCA and TruncatedSVD through `LINEAR_STEPS`.

For the kernel families a pipeline's steps become maps: scalers a `Diagonal`
(x' = (x - shift) scale + offset, the form the kernels fuse, which keeps
StandardScaler exact for features whose mean dwarfs their spread), PCA and
TruncatedSVD a `Projection`, Normalizer a `Normalize`. `plan` turns the maps into
what the scorers run (modeling/scorer_support.py, `Inputs`):

- runs of scalers compose into one Diagonal, fused into the next kernel's pass;
- projections (with the scalers between them) compose into one `project` stage,
  the Diagonal before them fused into it; a Normalizer is a stage of its own;
- the Diagonal after the last stage is fused into the final kernel.

So a chain of scalers before an SVM, k-means or PCA costs no extra pass; a PCA or
TruncatedSVD before an SVM or k-means costs one projection pass (fusing it would
need distances in the reduced space, which an rbf kernel or k-means cannot get
from the input's); a linear-kernel SVM folds everything after the last Normalizer
into its weights, as linear models do. Parameters are stored as float64 whatever
the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorwire.kernels import decomposition
from tensorwire.server.modeling.registry import ClassSet, ClassTable, Exported, describe
from tensorwire.server.modeling.scorer_support import NORMS

if TYPE_CHECKING:  # the step types are registered by dotted path: a serving process never imports scikit-learn
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, StandardScaler

# --- folding into linear weights --------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """x' = scale * x + shift, feature by feature: a pipeline's scalers folded into one map."""

    scale: np.ndarray  # float64 [n_features]
    shift: np.ndarray  # float64 [n_features]

    def then(self, after: Affine) -> Affine:
        """This map followed by `after`."""
        return Affine(after.scale * self.scale, after.scale * self.shift + after.shift)

    def fold(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W' = W * scale, b' = W @ shift + b, so that W' @ x + b' = W @ x' + b."""
        return coef * self.scale, coef @ self.shift + intercept


# A linear (not per-feature) step's fold into a linear model: (step, W, b) -> (W', b') with W' x + b' = W step(x) + b.
LinearFold = Callable[[Any, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


LINEAR_STEPS: ClassTable[LinearFold] = ClassTable("LINEAR_STEPS")


# Every step type other than the scalers that may precede a final estimator (the kernel-family maps below add theirs).
TRANSFORMS = ClassSet("TRANSFORMS")


@dataclass(frozen=True)
class Preprocessing:
    """A Pipeline's fitted steps before its final estimator, in order; exporters fold them or fuse them into kernels."""

    steps: tuple[tuple[str, Any], ...]  # (name, fitted step), passthrough steps left out
    affines: tuple[Affine | None, ...]  # each scaler's map (PREPROCESSORS); None for the other steps
    final: str  # the final estimator, as messages name it
    # What `tensorwire.export` knows beyond the steps (modeling/export.py): whether the model is exported for serving
    # on its own, so that it should explain itself (a calibrated classifier's members are not), and the training rows
    # passed as export(..., background=X_train): raw input columns, float64, no infinity, the model's width; NaN kept.
    explain: bool = False
    background: np.ndarray | None = None

    def raw_input_mean(self) -> np.ndarray | None:
        """The training mean of the raw input columns as the pipeline knows it: a StandardScaler(with_mean=True)'s
        mean_, mapped back through the per-feature scalers before it; None when no such scaler has only those before it."""
        before: Affine | None = None  # the per-feature scalers before the step, composed
        from sklearn.preprocessing import StandardScaler

        for (_, step), affine in zip(self.steps, self.affines, strict=True):
            if affine is None:
                return None  # a projection: its input means cannot be read back from a later scaler's
            if isinstance(step, StandardScaler) and step.with_mean:
                mean = _f64(step.mean_, step.n_features_in_)
                if before is None:
                    return mean
                return None if np.any(before.scale == 0.0) else (mean - before.shift) / before.scale
            before = affine if before is None else before.then(affine)
        return None

    def fold(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W' and b' with W' @ x + b' = W @ steps(x) + b: runs of scalers fold as one Affine, PCA and TruncatedSVD by LINEAR_STEPS."""
        segments: list[Affine | tuple[Any, LinearFold]] = []
        for (name, step), affine in zip(self.steps, self.affines, strict=True):
            if affine is not None:
                last = segments[-1] if segments else None
                if isinstance(last, Affine):
                    segments[-1] = last.then(affine)
                else:
                    segments.append(affine)
                continue
            linear_fold = LINEAR_STEPS.get(type(step))
            if linear_fold is None:
                raise ValueError(
                    f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline before {self.final}: "
                    f"{type(step).__name__} is not a linear map, so it cannot fold into {self.final}'s weights "
                    "(it can precede kernel SVMs, k-means, PCA and TruncatedSVD)"
                )
            segments.append((step, linear_fold))
        for segment in reversed(segments):
            if isinstance(segment, Affine):
                coef, intercept = segment.fold(coef, intercept)
            else:
                coef, intercept = segment[1](segment[0], coef, intercept)
        return coef, intercept


PREPROCESSORS: ClassTable[Callable[[Any], Affine]] = ClassTable("PREPROCESSORS")


def folds(cls: type | str) -> Callable[[Callable[[Any], Affine]], Callable[[Any], Affine]]:
    """Register the affine map of a preprocessing step (its class or public dotted path) that can precede an estimator."""

    def decorator(fold: Callable[[Any], Affine]) -> Callable[[Any], Affine]:
        PREPROCESSORS.add(cls, fold)
        return fold

    return decorator


def _f64(values: Any, n_features: int | None = None) -> np.ndarray:
    return np.array(values, dtype=np.float64, copy=True).reshape(-1 if n_features is None else n_features)


@folds("sklearn.preprocessing.StandardScaler")
def _standard_scaler_affine(scaler: StandardScaler) -> Affine:
    n = scaler.n_features_in_
    # mean_ is fitted even with with_mean=False; transform then ignores it.
    mean = _f64(scaler.mean_, n) if scaler.with_mean else np.zeros(n)
    scale = _f64(scaler.scale_, n) if scaler.with_std else np.ones(n)
    return Affine(1.0 / scale, -mean / scale)


@folds("sklearn.preprocessing.MinMaxScaler")
def _min_max_scaler_affine(scaler: MinMaxScaler) -> Affine:
    if scaler.clip:
        raise ValueError(
            "clip=True clamps features into feature_range, which is not an affine map; refit with clip=False"
        )
    n = scaler.n_features_in_
    return Affine(_f64(scaler.scale_, n), _f64(scaler.min_, n))


@folds("sklearn.preprocessing.MaxAbsScaler")
def _max_abs_scaler_affine(scaler: MaxAbsScaler) -> Affine:
    n = scaler.n_features_in_
    return Affine(1.0 / _f64(scaler.scale_, n), np.zeros(n))


# --- maps and plans for the kernel families ---------------------------------------------


@dataclass(frozen=True)
class Diagonal:
    """x' = (x - shift) * scale + offset, feature by feature: the pre-scaling every kernel fuses into its pass."""

    shift: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @staticmethod
    def identity(width: int) -> Diagonal:
        return Diagonal(*decomposition.identity_affine(width))

    def then(self, after: Diagonal) -> Diagonal:
        """This map followed by `after`: ((x - s1) k1 + o1 - s2) k2 + o2, with the subtraction moved into x's units."""
        # (x - s1) k1 + o1 - s2 = (x - (s1 + (s2 - o1) / k1)) k1: subtracting before any scaling is what keeps a
        # standardisation after another scaler as exact as a lone one; a zero k1 (no scikit-learn scaler makes one)
        # keeps the constant in the offset instead.
        k1 = self.scale
        movable = k1 != 0.0
        safe_k1 = np.where(movable, k1, 1.0)
        shift = np.where(movable, self.shift + (after.shift - self.offset) / safe_k1, self.shift)
        offset = np.where(movable, after.offset, (self.offset - after.shift) * after.scale + after.offset)
        return Diagonal(shift, k1 * after.scale, offset)

    def as_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}shift": self.shift, f"{prefix}scale": self.scale, f"{prefix}offset": self.offset}


@dataclass(frozen=True)
class Projection:
    """x' = (x @ components_t - bias) / divisor: scikit-learn's PCA.transform order (TruncatedSVD: bias 0, divisor 1)."""

    components_t: np.ndarray  # [n_in, n_out]
    bias: np.ndarray
    divisor: np.ndarray

    def then_diagonal(self, after: Diagonal) -> Projection:
        """This projection followed by a Diagonal, as one projection: ((p - b) / d - s) k + o = (p - (b + (s - o / k) d)) / (d / k)."""
        if np.any(after.scale == 0.0):
            raise ValueError("a scaler with a zero scale after a projection cannot compose with it")
        return Projection(self.components_t, self.bias + (after.shift - after.offset / after.scale) * self.divisor, self.divisor / after.scale)

    def then(self, after: Projection) -> Projection:
        """This projection followed by another, as one: components (C1 / d1) C2, bias (b1 / d1) C2 + b2, divisor d2."""
        return Projection(
            np.ascontiguousarray((self.components_t / self.divisor) @ after.components_t),
            (self.bias / self.divisor) @ after.components_t + after.bias,
            after.divisor,
        )

    def as_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}components_t": self.components_t, f"{prefix}bias": self.bias, f"{prefix}divisor": self.divisor}


@dataclass(frozen=True)
class Normalize:
    """Normalizer: each row divided by its own l1, l2 or max norm (not a per-feature map: always a stage)."""

    norm: str


StepMap = Diagonal | Projection | Normalize


STEP_MAPS: ClassTable[Callable[[Any], StepMap]] = ClassTable("STEP_MAPS")


def maps(cls: type | str) -> Callable[[Callable[[Any], StepMap]], Callable[[Any], StepMap]]:
    """Register the map of a pipeline step type (its class or public dotted path) for the kernel families (and
    accept the type in pipelines)."""

    def decorator(fn: Callable[[Any], StepMap]) -> Callable[[Any], StepMap]:
        STEP_MAPS.add(cls, fn)
        if not PREPROCESSORS.declares(cls):  # the scalers, registered above under the same names, are accepted already
            TRANSFORMS.add(cls)
        return fn

    return decorator


@maps("sklearn.preprocessing.StandardScaler")
def _standard_scaler_diagonal(scaler: StandardScaler) -> Diagonal:
    n = scaler.n_features_in_
    shift = _f64(scaler.mean_) if scaler.with_mean else np.zeros(n)  # mean_ is fitted even with with_mean=False
    scale = 1.0 / _f64(scaler.scale_) if scaler.with_std else np.ones(n)
    return Diagonal(shift, scale, np.zeros(n))


@maps("sklearn.preprocessing.MinMaxScaler")
def _min_max_scaler_diagonal(scaler: MinMaxScaler) -> Diagonal:
    # clip=True is refused before this runs (PREPROCESSORS, above); x * scale_ + min_ is scikit-learn's own order.
    return Diagonal(np.zeros(scaler.n_features_in_), _f64(scaler.scale_), _f64(scaler.min_))


@maps("sklearn.preprocessing.MaxAbsScaler")
def _max_abs_scaler_diagonal(scaler: MaxAbsScaler) -> Diagonal:
    n = scaler.n_features_in_
    return Diagonal(np.zeros(n), 1.0 / _f64(scaler.scale_), np.zeros(n))


@maps("sklearn.decomposition.PCA")
def _pca(pca: PCA) -> Projection:
    return Projection(*decomposition.pca_params(pca.components_, pca.mean_, pca.explained_variance_, bool(pca.whiten)))


@maps("sklearn.decomposition.TruncatedSVD")
def _truncated_svd(svd: TruncatedSVD) -> Projection:
    return Projection(*decomposition.truncated_svd_params(svd.components_))


@maps("sklearn.preprocessing.Normalizer")
def _normalizer(normalizer: Normalizer) -> Normalize:
    if normalizer.norm not in NORMS:
        raise ValueError(f"norm {normalizer.norm!r} is not one of {NORMS}")
    return Normalize(normalizer.norm)


def _fold_projection(step: Any, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W ((x C - b) / d) + c = ((W / d) C^T) x + (c - (W / d) b): a PCA or TruncatedSVD folded into a linear model."""
    proj = STEP_MAPS[type(step)](step)
    assert isinstance(proj, Projection)
    return fold_into_weights(proj, coef, intercept)


def fold_into_weights(proj: Projection, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = coef / proj.divisor
    return np.ascontiguousarray(scaled @ proj.components_t.T), intercept - scaled @ proj.bias


LINEAR_STEPS.add("sklearn.decomposition.PCA", _fold_projection)
LINEAR_STEPS.add("sklearn.decomposition.TruncatedSVD", _fold_projection)


@dataclass(frozen=True)
class ProjectStage:
    prefix: Diagonal  # fused into the projection's pass
    projection: Projection


@dataclass(frozen=True)
class NormalizeStage:
    prefix: Diagonal  # applied to the row before its norm is taken
    norm: str


@dataclass(frozen=True)
class Plan:
    """What a scorer runs: stages in order, then the final kernel with `affine` fused in."""

    stages: tuple[ProjectStage | NormalizeStage, ...]
    affine: Diagonal
    n_features: int  # the model's input width

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = self.affine.as_arrays("")
        for i, stage in enumerate(self.stages):
            arrays.update(stage.prefix.as_arrays(f"stage{i}_"))
            if isinstance(stage, ProjectStage):
                arrays.update(stage.projection.as_arrays(f"stage{i}_"))
        return arrays

    def params(self) -> list[dict[str, str]]:
        return [{"op": "project"} if isinstance(s, ProjectStage) else {"op": "normalize", "norm": s.norm} for s in self.stages]


def maps_of_steps(prep: Preprocessing | None, final: str) -> list[tuple[str, StepMap]]:
    named: list[tuple[str, StepMap]] = []
    for name, step in () if prep is None else prep.steps:
        try:
            named.append((name, STEP_MAPS[type(step)](step)))
        except (KeyError, ValueError) as exc:
            reason = f"{type(step).__name__} has no map" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline before {final}: {reason}") from None
    return named


def plan(step_maps: Sequence[tuple[str, StepMap]], n_features: int) -> Plan:
    """Compose the maps into stages and the final kernel's fused pre-scaling (see the module docstring)."""
    width = _width_in(step_maps, n_features)
    stages: list[ProjectStage | NormalizeStage] = []
    lead: Diagonal | None = None  # the pending projection's prefix
    proj: Projection | None = None  # projections (and the scalers between them) not yet made a stage
    tail: Diagonal | None = None  # scalers after the pending projection (or since the last stage)
    current = width
    for name, m in step_maps:
        if isinstance(m, Diagonal):
            if m.shift.shape[0] != current:
                raise ValueError(f"step '{name}' expects {m.shift.shape[0]} features, the step before it gives {current}")
            tail = m if tail is None else tail.then(m)
        elif isinstance(m, Projection):
            if m.components_t.shape[0] != current:
                raise ValueError(f"step '{name}' expects {m.components_t.shape[0]} features, the step before it gives {current}")
            if proj is None:
                lead, proj = (tail or Diagonal.identity(current)), m
            else:
                proj = (proj if tail is None else proj.then_diagonal(tail)).then(m)
            tail = None
            current = m.components_t.shape[1]
        else:
            if proj is not None:
                assert lead is not None
                stages.append(ProjectStage(lead, proj))
                proj = None
            stages.append(NormalizeStage(tail or Diagonal.identity(current), m.norm))
            tail = None
    if proj is not None:
        assert lead is not None
        stages.append(ProjectStage(lead, proj))
    return Plan(tuple(stages), tail or Diagonal.identity(current), width)


def _width_in(step_maps: Sequence[tuple[str, StepMap]], n_features: int) -> int:
    """The raw input width: the first per-feature step's, else the final estimator's."""
    for _, m in step_maps:
        if isinstance(m, Diagonal):
            return int(m.shift.shape[0])
        if isinstance(m, Projection):
            return int(m.components_t.shape[0])
    return n_features


def planned(estimator: Any, prep: Preprocessing | None, n_features: int) -> Plan:
    """The plan for a final kernel fitted on n_features: its steps' maps composed, the width they hand it checked."""
    where = describe(estimator) if prep is None or not prep.steps else f"Pipeline ending in {describe(estimator)}"
    step_maps = maps_of_steps(prep, describe(estimator))
    try:
        result = plan(step_maps, n_features)
    except ValueError as exc:
        raise ValueError(f"tensorwire cannot export {where}: {exc}") from None
    if result.affine.shift.shape[0] != n_features:
        raise ValueError(
            f"tensorwire cannot export {where}: the steps before it give {result.affine.shift.shape[0]} features, "
            f"it was fitted on {n_features}"
        )
    return result


def exported(kind: str, plan_: Plan, outputs: Any, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Exported:
    return Exported(
        kind=kind,
        n_features=plan_.n_features,
        outputs=outputs,
        arrays={**plan_.arrays(), **{name: np.ascontiguousarray(a) for name, a in arrays.items()}},
        params={**params, "stages": plan_.params()},
    )
