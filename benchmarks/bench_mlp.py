"""µs per call for a 32-64-64-3 MLPClassifier's predict_proba: tensorwire's scorer, scikit-learn, ONNX Runtime (1 thread).

tensorwire   tensorwire.export(model, dtype="float32") -> load_model -> build_scorer, then scorer.score (in-process)
sklearn      MLPClassifier.predict_proba
onnxruntime  skl2onnx conversion (zipmap off), InferenceSession with one intra-op and one inter-op thread

Every contender runs on one thread: BLAS (numpy's and scipy's OpenBLAS, which numba's np.dot calls) is capped
before numpy loads, as `tensorwire serve` caps it at the kernel thread budget (default 1).

Two models, float32 rows in both: one trained on float32 rows (coefs_ float32: scikit-learn, and tensorwire,
compute in float32) and one trained on float64 rows (coefs_ float64: both compute in float64; ONNX Runtime
computes in float32 either way).

Each figure is the best of seven timed loops, the three contenders' loops interleaved round by round.

Run: python benchmarks/bench_mlp.py [--budget SECONDS]
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
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


def per_call_us(fns: list[Callable[[], object]], budget_s: float, rounds: int = 7) -> list[float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 32)).astype(np.float32)
    y = rng.integers(0, 3, size=4096)

    import onnxruntime as ort
    from skl2onnx import to_onnx

    print(f"{'train':>7} {'compute':>8} {'batch':>6} {'tensorwire µs':>14} {'sklearn µs':>11} {'onnxruntime µs':>15} {'sk/tw':>7} {'ort/tw':>7}")
    for train_dtype in (np.float32, np.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=5, random_state=0).fit(X.astype(train_dtype), y)
        with tempfile.TemporaryDirectory() as tmp:
            stored = load_model(tensorwire.export(model, pathlib.Path(tmp) / "mlp" / "1", dtype="float32"))
        scorer = build_scorer(stored.manifest, stored.arrays)
        compute = np.dtype(getattr(scorer, "compute_dtype", np.float64)).name

        onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        for n in (1, 64, 4096):
            Xn = np.ascontiguousarray(X[:n])
            np.testing.assert_allclose(scorer.score(Xn, ["predict_proba"])[0], model.predict_proba(Xn), rtol=1e-4, atol=1e-5)
            tw, sk, ox = per_call_us(
                [lambda: scorer.score(Xn, ["predict_proba"]), lambda: model.predict_proba(Xn), lambda: session.run(None, {name: Xn})],
                args.budget,
            )
            print(f"{np.dtype(train_dtype).name:>7} {compute:>8} {n:>6} {tw:>14.1f} {sk:>11.1f} {ox:>15.1f} {sk / tw:>7.2f} {ox / tw:>7.2f}", flush=True)
    blas = ", ".join(f"{pool['internal_api']} {pool['num_threads']} thread(s)" for pool in threadpool_info() if pool["user_api"] == "blas")
    print(f"BLAS pools: {blas}")


if __name__ == "__main__":
    main()
