"""Kernel SVM, k-means and decomposition kernels beside scikit-learn and ONNX Runtime, measured in one run.

(a) Time per call at batch 1, 64 and 4096 for each model: tensorwire's kernels
    (float32 read-only rows, as a request delivers them; `tw` serial, `tw par`
    the parallel variant on numba's default threads), scikit-learn (float64 rows,
    its native dtype) and, when `onnxruntime` and `skl2onnx` import, ONNX Runtime
    on the model converted by skl2onnx (float32 rows; one intra-op thread, and its
    default). tensorwire and scikit-learn run with BLAS capped at one thread.
    Best of several rounds of the mean time per call; ratios are reference / tw.

(b) Load time per family in fresh processes: cold (empty numba cache: import,
    compile, first call) and warm (same, with the cache the cold run wrote).

    python benchmarks/bench_kernels_family.py            # full run (a few minutes)
    python benchmarks/bench_kernels_family.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

BATCHES = (1, 64, 4096)
N_TRAIN = 3000
warnings.filterwarnings("ignore")  # scikit-learn 1.9 deprecates SVC(probability=True); it is still what we mirror


def readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


@dataclass
class Case:
    """One model: how tensorwire, scikit-learn and ONNX Runtime score a batch of it."""

    name: str
    family: str
    estimator: Any
    X: np.ndarray  # float64 rows to draw batches from
    tw: Callable[[np.ndarray], Any]  # float32 read-only rows -> outputs
    tw_parallel: Callable[[np.ndarray], Any]
    sklearn: Callable[[np.ndarray], Any]
    arrays: dict[str, Any]  # what a fresh process needs to rebuild the call (for load times)


def svm_case(name: str, estimator: Any, X: np.ndarray, scaler: Any = None) -> Case:
    from tensorwire.kernels import svm

    model = estimator if scaler is None else estimator[-1]
    n_features = X.shape[1]
    shift, scale = (np.zeros(n_features), np.ones(n_features)) if scaler is None else (scaler.mean_, 1.0 / scaler.scale_)
    offset = np.zeros(n_features)
    sv, sq, centre = svm.support_vector_params(model.support_vectors_, model.kernel)
    classifier = hasattr(model, "classes_")
    if classifier:
        coef_t, bounds, outputs = svm.svc_coefficients(model.dual_coef_, model.n_support_)
    else:
        coef_t, bounds, outputs = svm.single_output_coefficients(model.dual_coef_)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    k = len(model.classes_) if classifier else 1
    args = (shift, scale, offset, sv, sq, centre, coef_t, bounds, outputs, intercept,
            svm.KERNEL_CODES[model.kernel], float(model._gamma), float(model.coef0), int(model.degree))

    def run(decision_fn: Callable[..., None]) -> Callable[[np.ndarray], Any]:
        def score(Xb: np.ndarray) -> Any:
            dec = np.empty((Xb.shape[0], intercept.shape[0]))
            decision_fn(Xb, *args, dec)
            if not classifier:
                return dec
            labels = np.empty(Xb.shape[0], dtype=np.int64)
            svm.svc_predict(dec, k, labels)
            return labels
        return score

    return Case(name, "svm", estimator, X, run(svm.svm_decision), run(svm.svm_decision_parallel), estimator.predict,
                {"args": args, "n_out": intercept.shape[0]})


def kmeans_case(name: str, estimator: Any, X: np.ndarray) -> Case:
    from tensorwire.kernels import decomposition, kmeans

    centers_t, sq = kmeans.kmeans_params(estimator.cluster_centers_)
    args = (*decomposition.identity_affine(X.shape[1]), centers_t, sq)

    def run(fn: Callable[..., None]) -> Callable[[np.ndarray], Any]:
        def score(Xb: np.ndarray) -> Any:
            labels = np.empty(Xb.shape[0], dtype=np.int64)
            fn(Xb, *args, labels)
            return labels
        return score

    return Case(name, "kmeans", estimator, X, run(kmeans.kmeans_predict), run(kmeans.kmeans_predict_parallel), estimator.predict,
                {"args": args})


def projection_case(name: str, estimator: Any, X: np.ndarray) -> Case:
    from tensorwire.kernels import decomposition

    if hasattr(estimator, "mean_"):
        params = decomposition.pca_params(estimator.components_, estimator.mean_, estimator.explained_variance_, estimator.whiten)
    else:
        params = decomposition.truncated_svd_params(estimator.components_)
    args = (*decomposition.identity_affine(X.shape[1]), *params)

    def run(fn: Callable[..., None]) -> Callable[[np.ndarray], Any]:
        def score(Xb: np.ndarray) -> Any:
            out = np.empty((Xb.shape[0], params[0].shape[1]))
            fn(Xb, *args, out)
            return out
        return score

    return Case(name, "decomposition", estimator, X, run(decomposition.project), run(decomposition.project_parallel),
                estimator.transform, {"args": args})


def build_cases() -> list[Case]:
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_classification, make_regression
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR

    X, y = make_classification(N_TRAIN + 4096, 20, n_informative=10, n_classes=3, random_state=0)
    Xs = X * np.linspace(0.5, 50.0, 20) + 100.0  # unscaled features: the pipeline's scaler is fused into the kernel
    svc = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0)).fit(Xs[:N_TRAIN], y[:N_TRAIN])
    poly = SVC(kernel="poly", degree=3).fit(X[:N_TRAIN], (y[:N_TRAIN] > 0).astype(int))
    Xr, yr = make_regression(N_TRAIN + 4096, 20, noise=10.0, random_state=1)
    svr = SVR(kernel="rbf", C=10.0, epsilon=0.1).fit(Xr[:N_TRAIN], yr[:N_TRAIN] / np.abs(yr).max())
    rng = np.random.default_rng(2)
    Xk = rng.normal(size=(N_TRAIN + 4096, 20)) + rng.normal(scale=4, size=(8, 20))[rng.integers(0, 8, N_TRAIN + 4096)]
    km = KMeans(8, n_init=1, random_state=0).fit(Xk[:N_TRAIN])
    Xp = rng.normal(size=(N_TRAIN + 4096, 50)) @ rng.normal(size=(50, 50))
    pca = PCA(10, whiten=True).fit(Xp[:N_TRAIN])
    tsvd = TruncatedSVD(10, random_state=0).fit(Xp[:N_TRAIN])
    return [
        svm_case(f"scaler+SVC rbf 3-class ({svc[-1].support_vectors_.shape[0]} SV)", svc, Xs[N_TRAIN:], scaler=svc[0]),
        svm_case(f"SVC poly binary ({poly.support_vectors_.shape[0]} SV)", poly, X[N_TRAIN:]),
        svm_case(f"SVR rbf ({svr.support_vectors_.shape[0]} SV)", svr, Xr[N_TRAIN:]),
        kmeans_case("KMeans k=8 predict", km, Xk[N_TRAIN:]),
        projection_case("PCA 50->10 whiten", pca, Xp[N_TRAIN:]),
        projection_case("TruncatedSVD 50->10", tsvd, Xp[N_TRAIN:]),
    ]


def onnx_sessions(case: Case) -> tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]] | None:
    """(single-thread, default-threads) ONNX Runtime scorers for the case, or None without onnxruntime/skl2onnx."""
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx
    except ImportError:
        return None
    from sklearn.svm import SVC

    onx = to_onnx(case.estimator, case.X[:1].astype(np.float32), options={SVC: {"zipmap": False}})
    blob = onx.SerializeToString()
    scorers = []
    for threads in (1, 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1 if threads else 0
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        first_output = [session.get_outputs()[0].name]
        scorers.append(lambda Xb, s=session, n=name, o=first_output: s.run(o, {n: Xb}))
    return scorers[0], scorers[1]


def best_time(fn: Callable[[], Any], budget_s: float, rounds: int) -> float:
    """Best over `rounds` of the mean time per call, each round about budget_s / rounds long."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    reps = max(1, int(budget_s / rounds / once))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def fmt_us(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    us = seconds * 1e6
    return f"{us:,.2f}" if us < 100 else f"{us:,.0f}"


def kernel_table(cases: list[Case], budget_s: float, rounds: int) -> None:
    print("\n(a) time per call in microseconds (rows/s for tw in parentheses); ratios = reference / tw\n")
    header = ["model", "batch", "tw", "tw par", "sklearn", "ort 1t", "ort def", "sk/tw", "ort1t/tw"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for case in cases:
        sessions = onnx_sessions(case)
        for batch in BATCHES:
            X64 = np.ascontiguousarray(case.X[:batch])
            X32 = readonly(X64.astype(np.float32))
            with threadpool_limits(1):
                tw = best_time(partial(case.tw, X32), budget_s, rounds)
                sk = best_time(partial(case.sklearn, X64), budget_s, rounds)
                tw_par = best_time(partial(case.tw_parallel, X32), budget_s, rounds) if batch >= 4096 else None
            ort1 = ortd = None
            if sessions is not None:
                ort1 = best_time(partial(sessions[0], X32), budget_s, rounds)
                ortd = best_time(partial(sessions[1], X32), budget_s, rounds)
            ratio_ort = f"{ort1 / tw:.1f}x" if ort1 is not None else "-"
            print(f"{case.name} | {batch} | {fmt_us(tw)} ({batch / tw:,.0f}/s) | {fmt_us(tw_par)} | {fmt_us(sk)} | "
                  f"{fmt_us(ort1)} | {fmt_us(ortd)} | {sk / tw:.1f}x | {ratio_ort}")


LOAD_SCRIPT = r"""
import sys, time, pickle
t0 = time.perf_counter()
import numpy as np
from tensorwire.kernels import {module}
t1 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    args, shape, n_out = pickle.load(f)
X = np.frombuffer(np.random.default_rng(0).normal(size=shape).astype(np.float32).tobytes(), dtype=np.float32).reshape(shape)
out = {out_expr}
t2 = time.perf_counter()
{module}.{kernel}(X, *args, out)
t3 = time.perf_counter()
print(f"{{t1 - t0:.4f}} {{t3 - t2:.4f}}")
"""

FAMILY_LOAD = {
    "svm": ("svm", "svm_decision", "np.empty((shape[0], n_out))"),
    "kmeans": ("kmeans", "kmeans_predict", "np.empty(shape[0], dtype=np.int64)"),
    "decomposition": ("decomposition", "project", "np.empty((shape[0], n_out))"),
}


def load_table(cases: list[Case]) -> None:
    import pickle

    print("\n(b) load time per family in a fresh process, seconds: import, then first call (compile or cache load) at batch 64\n")
    print("family | import | cold first call | warm first call")
    print("--- | --- | --- | ---")
    seen: set[str] = set()
    for case in cases:
        if case.family in seen:
            continue
        seen.add(case.family)
        module, kernel_name, out_expr = FAMILY_LOAD[case.family]
        args = case.arrays["args"]
        n_out = case.arrays.get("n_out", args[-2].shape[0] if case.family == "decomposition" else 0)
        with tempfile.TemporaryDirectory() as tmp:
            params = pathlib.Path(tmp, "params.pkl")
            params.write_bytes(pickle.dumps((args, (64, case.X.shape[1]), n_out)))
            script = pathlib.Path(tmp, "load.py")
            script.write_text(LOAD_SCRIPT.format(module=module, kernel=kernel_name, out_expr=out_expr))
            env = {**os.environ, "NUMBA_CACHE_DIR": str(pathlib.Path(tmp, "cache")), "OPENBLAS_NUM_THREADS": "1"}
            times = []
            for _ in ("cold", "warm"):
                done = subprocess.run([sys.executable, str(script), str(params)], env=env, capture_output=True, text=True, check=True)
                times.append([float(v) for v in done.stdout.split()])
        print(f"{case.family} | {times[1][0]:.3f} | {times[0][1]:.3f} | {times[1][1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short timing rounds (a smoke test)")
    options = parser.parse_args()
    import numba

    from tensorwire.kernels import config

    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), numba threads {numba.get_num_threads()}, "
          f"PARALLEL_MIN_ROWS {config.PARALLEL_MIN_ROWS}")
    try:
        import onnxruntime
        import skl2onnx

        print(f"onnxruntime {onnxruntime.__version__}, skl2onnx {skl2onnx.__version__}")
    except ImportError:
        print("onnxruntime / skl2onnx not importable: ONNX Runtime columns skipped")
    cases = build_cases()
    budget, rounds = (0.05, 2) if options.quick else (0.6, 5)
    kernel_table(cases, budget, rounds)
    load_table(cases)


if __name__ == "__main__":
    main()
