"""µs per call for a 32-64-64-3 MLPClassifier's predict_proba: tensorwire's scorer, scikit-learn, ONNX Runtime (1 thread).

tensorwire   tensorwire.export(model, dtype=<the rows' dtype>) -> load_model -> build_scorer, then scorer.score (in-process)
sklearn      MLPClassifier.predict_proba
ort f32      skl2onnx conversion with a float32 input (zipmap off): every weight cast to float32, float32 arithmetic
ort f64      skl2onnx conversion with a float64 input: float64 weights and arithmetic, scikit-learn's precision
             (float32 rows are cast to float64 inside the timed call, as a user of that graph must)
             Both sessions have one intra-op and one inter-op thread.

Every contender runs on one thread: BLAS (numpy's and scipy's OpenBLAS, which numba's np.dot calls) is capped
before numpy loads, as `tensorwire serve` caps it at the kernel thread budget (default 1), and so are numba's and
tensorwire's kernel threads.

Three cases, as scikit-learn computes them (its forward pass runs in numpy's promotion of the rows' and coefs_'s
dtypes, so in float32 only for a network trained on float32 rows scoring float32 rows):
    train float32, rows float32   float32 arithmetic: the like-for-like ONNX graph is ort f32
    train float64, rows float32   float64 arithmetic (scikit-learn's default training dtype): like-for-like is ort f64
    train float64, rows float64   float64 arithmetic: like-for-like is ort f64
tensorwire computes in scikit-learn's precision, to DESIGN.md's tolerances; ort f32 on a float64-trained network
computes something less exact than scikit-learn (its largest difference is printed as "ort32 err").
"like" is the ratio to the ONNX graph of tensorwire's precision.

Each figure is the best of --rounds timed loops (15), the contenders' loops interleaved round by round.

Run: python benchmarks/bench_mlp.py [--budget SECONDS] [--rounds N]   (needs onnxruntime and skl2onnx: pip install onnxruntime skl2onnx)
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "TENSORWIRE_KERNEL_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import pathlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

import tensorwire  # noqa: E402
from tensorwire.server.modeling.registry import build_scorer  # noqa: E402
from tensorwire.server.repository.model_format import load_model  # noqa: E402


def per_call_us(fns: list[Callable[[], object]], budget_s: float, rounds: int) -> list[float]:
    """µs per call of each function: the best of `rounds` timed loops, the functions' loops interleaved round by
    round so that load from other processes falls on all of them alike."""
    loops = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        loops.append(max(1, int(budget_s / rounds / max(time.perf_counter() - t0, 1e-7))))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(loops[i]):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / loops[i])
    return [b * 1e6 for b in best]


def ort_session(model: MLPClassifier, dtype: type[np.floating]) -> Callable[[np.ndarray], object]:
    """A one-thread ONNX Runtime session of skl2onnx's graph with a `dtype` input, as a function of the rows."""
    import onnxruntime as ort
    from skl2onnx import to_onnx

    onx = to_onnx(model, np.zeros((1, model.n_features_in_), dtype=dtype), options={id(model): {"zipmap": False}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda rows: session.run(["probabilities"], {name: rows.astype(dtype, copy=False)})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="timed loops per measurement, the best one kept (more catch more of a shared machine's quiet moments)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 32))
    y = rng.integers(0, 3, size=4096)

    print(f"{'train':>7} {'rows':>7} {'compute':>8} {'batch':>6} {'tensorwire':>10} {'sklearn':>9} {'ort f32':>8} {'ort f64':>8}"
          f" {'sk/tw':>6} {'ort32/tw':>8} {'ort64/tw':>8} {'like':>5} {'ort32 err':>9}   (µs per call)")
    for train_dtype, row_dtype in ((np.float32, np.float32), (np.float64, np.float32), (np.float64, np.float64)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=5, random_state=0).fit(X.astype(train_dtype), y)
        with tempfile.TemporaryDirectory() as tmp:
            stored = load_model(tensorwire.export(model, pathlib.Path(tmp) / "mlp" / "1", dtype=np.dtype(row_dtype).name))
        scorer = build_scorer(stored.manifest, stored.arrays)
        compute = np.dtype(getattr(scorer, "compute_dtype", np.float64))
        ort32, ort64 = ort_session(model, np.float32), ort_session(model, np.float64)
        rtol, atol = (1e-5, 1e-6) if row_dtype == np.float32 else (1e-9, 1e-12)  # DESIGN.md's tolerances

        for n in (1, 64, 4096):
            Xn = np.ascontiguousarray(X[:n], dtype=row_dtype)
            expect = model.predict_proba(Xn)
            np.testing.assert_allclose(scorer.score(Xn, ["predict_proba"])[0], expect, rtol=rtol, atol=atol)
            ort32_err = float(np.max(np.abs(ort32(Xn) - expect)))
            tw, sk, o32, o64 = per_call_us(
                [lambda: scorer.score(Xn, ["predict_proba"]), lambda: model.predict_proba(Xn), lambda: ort32(Xn), lambda: ort64(Xn)],
                args.budget, args.rounds,
            )
            like = (o32 if compute == np.float32 else o64) / tw
            print(f"{np.dtype(train_dtype).name:>7} {np.dtype(row_dtype).name:>7} {compute.name:>8} {n:>6} {tw:>10.1f} {sk:>9.1f} {o32:>8.1f} {o64:>8.1f}"
                  f" {sk / tw:>6.2f} {o32 / tw:>8.2f} {o64 / tw:>8.2f} {like:>5.2f} {ort32_err:>9.1e}", flush=True)
    blas = ", ".join(f"{pool['internal_api']} {pool['num_threads']} thread(s)" for pool in threadpool_info() if pool["user_api"] == "blas")
    print(f"BLAS pools: {blas}")


if __name__ == "__main__":
    main()
