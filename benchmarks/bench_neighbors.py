"""Nearest neighbours: µs per call for tensorwire beside scikit-learn's fastest algorithm and ONNX Runtime (1 thread).

    python benchmarks/bench_neighbors.py [--quick] [--scorer]

N x 32 standard-normal training rows (N = 10,000 and 200,000; --quick: 10,000 only, batches 1 and 64), k = 5,
queries at batch 1, 64 and 4096. Three tables:

1. kneighbors (distances and indices), every engine computing the same thing: tensorwire's exact per-row
   kernel (kernels/neighbors.py) and its blocked kernel (kernels/neighbors_blocked.py), both serial, BLAS at
   1 thread; scikit-learn's NearestNeighbors, brute, kd_tree and ball_tree each timed at its default threads
   (both cores), the fastest reported; ONNX Runtime (skl2onnx NearestNeighbors, 1 thread).
   ratio = best other / blocked. Slow cases are timed on the first rows of the batch and scaled up to the
   batch (the per-row engines are linear in the rows); such cells are marked *.
2. the distance part at batch 4096: the blocked kernel's whole kneighbors call as GFLOP/s of its products
   (2 * batch * N * 32 flops), float64 and float32 training sets, beside numpy matmul (1 thread) of the same
   block shapes (inner dimension 32) and of a square 1024 x 1024 x 1024 product (the machine's GEMM rate),
   measured in the same run.
3. (--scorer) KNeighborsClassifier predict_proba through tensorwire's scorer (export float32 -> load_model ->
   build_scorer -> score, as the family dispatches today) beside scikit-learn's predict_proba and ONNX Runtime.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from threadpoolctl import threadpool_limits

from tensorwire.kernels import neighbors
from tensorwire.kernels.neighbors_blocked import QUERY_BLOCK, TRAIN_BLOCK, kneighbors_blocked, train_squared_norms
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model

K = 5
N_FEATURES = 32
SLOW_S = 1.0  # a call longer than this is timed once


def per_call_us(fn: Callable[[], Any], budget_s: float = 0.5) -> float:
    """µs per call: one call, then (unless it took over SLOW_S) as many as fit in budget_s, at least 2."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > SLOW_S:
        return first * 1e6
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s or calls < 2:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def scaled_us(fn: Callable[[np.ndarray], Any], Q: np.ndarray, rows: int) -> tuple[float, bool]:
    """µs for fn(Q), timed on Q[:rows] and scaled to Q's rows when rows < len(Q) (True then)."""
    if rows >= Q.shape[0]:
        return per_call_us(lambda: fn(Q)), False
    part = Q[:rows]
    return per_call_us(lambda: fn(part)) * Q.shape[0] / rows, True


def ort_session(model: Any, X: np.ndarray, options: dict[int, Any] | None = None) -> Any:
    """An ONNX Runtime session (1 thread) for a fitted scikit-learn model, or None with the reason printed."""
    try:
        import onnxruntime as rt
        from skl2onnx import to_onnx

        session_options = rt.SessionOptions()
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        onx = to_onnx(model, X[:1].astype(np.float32), options=options)
        return rt.InferenceSession(onx.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the column says nan
        print(f"onnxruntime: {exc}")
        return None


def tensorwire_kernels(train: np.ndarray) -> tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]]:
    """(exact, blocked) kneighbors over `train`, each allocating its outputs and merging per-range heaps as the scorer does
    (ties in the order of this machine's scikit-learn: its OpenMP threads, as the exporter records them)."""
    n = train.shape[1]
    identity = (np.zeros(n), np.ones(n), np.zeros(n))
    norms = train_squared_norms(train)
    threads = _openmp_effective_n_threads()

    def exact(Q: np.ndarray) -> None:
        d, i = np.empty((Q.shape[0], K)), np.empty((Q.shape[0], K), dtype=np.int64)
        neighbors.argkmin(Q, *identity, train, 0, 2.0, neighbors.argkmin_ranges(Q.shape[0], train.shape[0], threads), d, i)

    def blocked(Q: np.ndarray) -> None:
        d, i = np.empty((Q.shape[0], K)), np.empty((Q.shape[0], K), dtype=np.int64)
        kneighbors_blocked(Q, *identity, train, norms, d, i, ranges=neighbors.argkmin_ranges(Q.shape[0], train.shape[0], threads))

    return exact, blocked


def kneighbors_table(sizes: list[int], batches: list[int], rng: np.random.Generator) -> dict[int, np.ndarray]:
    print(f"kneighbors, k={K}, µs per call (* = timed on a subset of the rows, scaled)")
    print(f"{'train rows':>10} {'batch':>6} {'exact kernel':>14} {'blocked':>10} {'sklearn best':>22} {'onnxruntime':>13} {'ratio':>6}")
    trains = {}
    for n in sizes:
        X = rng.normal(size=(n, N_FEATURES))
        trains[n] = X
        fits = {a: NearestNeighbors(n_neighbors=K, algorithm=a).fit(X) for a in ("brute", "kd_tree", "ball_tree")}
        ort = ort_session(NearestNeighbors(n_neighbors=K, radius=None).fit(X), X)
        exact, blocked = tensorwire_kernels(X)
        exact(X[:1].astype(np.float32))
        blocked(X[:1].astype(np.float32))  # compile, and load numba's BLAS, before threadpool_limits caps it
        for b in batches:
            Q = rng.normal(size=(b, N_FEATURES)).astype(np.float32)
            big = n * b >= 200_000 * 64
            with threadpool_limits(1):
                ours_exact, exact_scaled = scaled_us(exact, Q, 256 if big else b)
                ours = per_call_us(lambda: blocked(Q))
            skl = {}
            for a, m in fits.items():
                rows = 512 if a != "brute" and big and b > 512 else b
                skl[a] = scaled_us(lambda q, m=m: m.kneighbors(q), Q, rows)
            best = min(skl, key=lambda a: skl[a][0])
            onnx, onnx_scaled = float("nan"), False
            if ort is not None:
                name = ort.get_inputs()[0].name
                onnx, onnx_scaled = scaled_us(lambda q: ort.run(None, {name: q}), Q, 512 if big else b)
            ratio = min(skl[best][0], onnx if onnx == onnx else np.inf) / ours
            mark = {True: "*", False: " "}
            print(
                f"{n:>10} {b:>6} {ours_exact:>13.0f}{mark[exact_scaled]} {ours:>10.0f} {skl[best][0]:>11.0f}{mark[skl[best][1]]}({best:>9})"
                f" {onnx:>12.0f}{mark[onnx_scaled]} {ratio:>6.2f}",
                flush=True,
            )
    return trains


def gemm_blocks(Q: np.ndarray, train: np.ndarray) -> None:
    """numpy matmul over the blocked kernel's block shapes: every QUERY_BLOCK x TRAIN_BLOCK product of Q by train."""
    out = np.empty((QUERY_BLOCK, TRAIN_BLOCK), dtype=train.dtype)
    for q0 in range(0, Q.shape[0], QUERY_BLOCK):
        for t0 in range(0, train.shape[0] - TRAIN_BLOCK + 1, TRAIN_BLOCK):
            np.matmul(Q[q0 : q0 + QUERY_BLOCK], train[t0 : t0 + TRAIN_BLOCK].T, out=out)


def gflops_table(trains: dict[int, np.ndarray], rng: np.random.Generator) -> None:
    b = 4096
    print(f"\ndistance part at batch {b}: GFLOP/s (2 * batch * N * {N_FEATURES} flops per call), 1 thread")
    print(f"{'train rows':>10} {'precision':>9} {'blocked kNN':>12} {'GEMM, same blocks':>18} {'GEMM 1024^3':>12} {'kNN / GEMM':>11}")
    Q = rng.normal(size=(b, N_FEATURES))
    for n, X in trains.items():
        for dtype in (np.float64, np.float32):
            train = np.ascontiguousarray(X, dtype=dtype)
            _, blocked = tensorwire_kernels(train)
            q = Q.astype(dtype)
            flops = 2.0 * b * n * N_FEATURES
            with threadpool_limits(1):
                blocked(Q[:1])
                ours = flops / (per_call_us(lambda: blocked(Q)) * 1e3)
                same = flops / (per_call_us(lambda: gemm_blocks(q, train)) * 1e3)
                square = rng.normal(size=(1024, 1024)).astype(dtype)
                square_out = np.empty_like(square)
                peak = 2.0 * 1024**3 / (per_call_us(lambda: np.matmul(square, square, out=square_out)) * 1e3)
            print(f"{n:>10} {np.dtype(dtype).name:>9} {ours:>12.2f} {same:>18.2f} {peak:>12.2f} {ours / same:>11.2f}", flush=True)


def scorer_table(sizes: list[int], batches: list[int], rng: np.random.Generator) -> None:
    print("\nKNeighborsClassifier predict_proba through the scorer, µs per call")
    print(f"{'train rows':>10} {'batch':>6} {'tensorwire':>12} {'sklearn best':>20} {'onnxruntime':>12} {'ratio':>6}")
    for n in sizes:
        X = rng.normal(size=(n, N_FEATURES))
        y = rng.integers(0, 3, n)
        fits = {a: KNeighborsClassifier(K, algorithm=a).fit(X, y) for a in ("brute", "kd_tree", "ball_tree")}
        with tempfile.TemporaryDirectory() as tmp:
            stored = load_model(export(fits["brute"], Path(tmp) / "m" / "1", dtype="float32"))
            scorer = build_scorer(stored.manifest, stored.arrays)
            ort = ort_session(fits["brute"], X, {id(fits["brute"]): {"zipmap": False}})
            for b in batches:
                Q = rng.normal(size=(b, N_FEATURES)).astype(np.float32)
                ours = per_call_us(lambda: scorer.score(Q, ["predict_proba"]))
                skl = {a: per_call_us(lambda m=m: m.predict_proba(Q)) for a, m in fits.items()}
                best = min(skl, key=skl.__getitem__)
                onnx = per_call_us(lambda: ort.run(None, {ort.get_inputs()[0].name: Q})) if ort is not None else float("nan")
                ratio = min(skl[best], onnx if onnx == onnx else np.inf) / ours
                print(f"{n:>10} {b:>6} {ours:>12.1f} {skl[best]:>11.1f} ({best:>7}) {onnx:>12.1f} {ratio:>6.2f}", flush=True)


def main() -> None:
    quick = "--quick" in sys.argv
    rng = np.random.default_rng(0)
    sizes = [10_000] if quick else [10_000, 200_000]
    batches = [1, 64] if quick else [1, 64, 4096]
    trains = kneighbors_table(sizes, batches, rng)
    if not quick:
        gflops_table(trains, rng)
    if "--scorer" in sys.argv:
        scorer_table(sizes, batches, rng)


if __name__ == "__main__":
    main()
