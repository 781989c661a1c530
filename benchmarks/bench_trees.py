"""Tree ensembles scored by tensorwire beside their own library, ONNX Runtime and lleaves: µs per call, one thread, one run.

It fits four binary classifiers on synthetic data (make_classification, 32
features, fixed seeds; nothing is downloaded):

    lgbm500  LightGBM LGBMClassifier, 500 trees, num_leaves 31
    xgb500   XGBoost XGBClassifier, 500 trees, max_depth 6
    rf100    scikit-learn RandomForestClassifier, 100 fully grown trees (20k training rows, so they are deep)
    hgb200   scikit-learn HistGradientBoostingClassifier, max_iter 200, no early stopping

and times one `predict_proba` call at batch 1, 64 and 4096 rows on each engine,
all on one thread, all on the same float32 rows (the data are float32 values, so
float64 training and float32 scoring see the same numbers):

    library     the model's own predict_proba (LightGBM n_jobs=1, XGBoost n_jobs=1,
                scikit-learn n_jobs=1; OpenMP capped at one thread with threadpoolctl)
    onnx        ONNX Runtime (intra_op 1, inter_op 1, sequential execution) on the model
                converted by onnxmltools.convert_lightgbm / convert_xgboost or skl2onnx
                (zipmap off, float32 input); only the probabilities output is fetched. skl2onnx
                1.20's HistGradientBoosting converter fails under onnx 1.23 ("Expected an int,
                got a boolean"); the script then retries with bools cast to ints and says so
    lleaves     LightGBM only: lleaves 1.3.0 (LLVM-compiled trees) in its own virtualenv,
                because it needs an llvmlite older than 0.45 (it calls the legacy
                PassManagerBuilder). The script creates it (default build/lleaves-venv, reused
                when it already holds the right versions) with `pip install lleaves==1.3.0
                "llvmlite<0.45" lightgbm==<this interpreter's version>`, and runs the timing in
                a subprocess of that venv's python: model.txt and a .npy of the rows go in,
                `Model.compile(cache=build/lleaves-cache/<hash>.o)` (compiled once, then loaded
                from the cache), `predict(X, n_jobs=1)` is timed (lleaves' default fp64 mode:
                it converts the float32 rows itself)
    tensorwire  tensorwire.export(model, dtype="float32") -> load_model -> build_scorer, then
                `scorer.score(X, ["predict_proba"])` on read-only C-contiguous float32 rows,
                as the server hands them over (numba kernels, TENSORWIRE_KERNEL_THREADS=1).
                If tensorwire cannot export, load or score a model, the column says "error"
                and the error is printed under the table; the other columns still run.

Each figure is the median over repeats of the mean time per call; a repeat is a
block of calls at least --repeat-ms long (calls per block calibrated after a
warm-up), timed with time.perf_counter_ns; batch 4096 gets fewer repeats.
Before timing, every engine's probabilities on 4096 held-out rows are compared
with the library's (max |Δp|); tensorwire's must be below 1e-4, or the row is
flagged. `tw vs best other` is the fastest other engine's time / tensorwire's
(>1: tensorwire is faster); `fastest` names the fastest engine of the row.

    python benchmarks/bench_trees.py                         # full run (2-3 minutes on 2 cores; the first run adds ~1 min of lleaves install and ~40 s of compile)
    python benchmarks/bench_trees.py --quick                 # smoke test, under a minute: 50-tree models (rf: 20 trees), fewer repeats
    python benchmarks/bench_trees.py --models lgbm500,rf100  # a subset
    python benchmarks/bench_trees.py --json > trees.json     # one JSON document on stdout (progress on stderr)
    python benchmarks/bench_trees.py --markdown trees.md     # also write the table as markdown

Flags: --quick, --json, --markdown FILE, --models LIST (default all four),
--no-lleaves (skip lleaves and its virtualenv), --no-onnx (skip ONNX Runtime),
--lleaves-venv DIR (default build/lleaves-venv), --repeat-ms MS (shortest timed
block, default 50; 20 with --quick). Subprocesses (pip, the lleaves worker) are
stopped on exit, Ctrl-C and SIGTERM. If the lleaves virtualenv cannot be made,
the lleaves column says why and the rest still runs. Exit status 1 when
tensorwire scored a model and its answers differ from the library's by 1e-4 or
more (a tensorwire error alone does not fail the run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import pathlib
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import numpy as np
from peer_venvs import clean_env, older, venv_python  # noqa: E402 - a sibling script module (benchmarks/ is the script's folder)

# Module level imports stop here (stdlib + numpy + peer_venvs): the lleaves worker imports this file in lleaves' virtualenv.

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = ROOT / "build" / "lleaves-venv"
LLEAVES_CACHE = ROOT / "build" / "lleaves-cache"
LLEAVES_VERSION = "1.3.0"
LLVMLITE_BELOW = "0.45"  # llvmlite 0.45 dropped the legacy pass manager (llvm.PassManagerBuilder) that lleaves 1.3.0 calls
N_FEATURES = 32
BATCHES = (1, 64, 4096)
CHECK_ROWS = 4096
TW_TOLERANCE = 1e-4  # max |Δ probability| between tensorwire (FP32 input) and the library
ENGINES = ("library", "onnx", "lleaves", "tensorwire")
SETUP_TIMEOUT_S = 900
WORKER_TIMEOUT_S = 1200


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- timing (also used by the lleaves worker) ---------------------------------------------------------


@dataclass(frozen=True)
class TimingPlan:
    repeats: int  # timed blocks at batch 1 and 64
    repeats_large: int  # timed blocks at batch 4096
    repeat_ms: float  # shortest block
    warmup_ms: float


@dataclass
class Timing:
    median_us: float
    min_us: float
    max_us: float
    calls_per_repeat: int
    repeats: int


def measure(fn: Callable[[], Any], repeats: int, repeat_ms: float, warmup_ms: float) -> Timing:
    """Median over `repeats` blocks of the mean µs per call; each block is at least repeat_ms long."""
    calls, start = 0, time.perf_counter_ns()
    while calls < 3 or time.perf_counter_ns() - start < warmup_ms * 1e6:
        fn()
        calls += 1
    once_ns = max((time.perf_counter_ns() - start) / calls, 1.0)
    per_block = max(1, math.ceil(repeat_ms * 1e6 / once_ns))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(per_block):
            fn()
        samples.append((time.perf_counter_ns() - t0) / per_block / 1e3)
    return Timing(statistics.median(samples), min(samples), max(samples), per_block, repeats)


def time_batches(score: Callable[[np.ndarray], Any], rows: np.ndarray, batches: Sequence[int], plan: TimingPlan) -> dict[int, Timing]:
    out = {}
    for batch in batches:
        X = readonly(rows[:batch])
        repeats = plan.repeats_large if batch >= 4096 else plan.repeats
        out[batch] = measure(functools.partial(score, X), repeats, plan.repeat_ms, plan.warmup_ms)
    return out


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous copy, as a request's tensor reaches a scorer (np.frombuffer)."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


# ---- models --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    key: str
    library: str  # lightgbm | xgboost | sklearn
    trees: int
    quick_trees: int
    train_rows: int
    quick_train_rows: int


SPECS = {
    "lgbm500": ModelSpec("lgbm500", "lightgbm", 500, 50, 20_000, 5_000),
    "xgb500": ModelSpec("xgb500", "xgboost", 500, 50, 20_000, 5_000),
    "rf100": ModelSpec("rf100", "sklearn", 100, 20, 20_000, 5_000),
    "hgb200": ModelSpec("hgb200", "sklearn", 200, 50, 20_000, 5_000),
}


@dataclass
class Fitted:
    key: str
    description: str
    estimator: Any
    fit_s: float
    depth: str = ""


def make_data(train_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_train float64, y_train, X_check float32): float32-representable values, 5% flipped labels."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=train_rows + CHECK_ROWS, n_features=N_FEATURES, n_informative=16, n_redundant=4,
        flip_y=0.05, class_sep=0.8, random_state=0,
    )  # fmt: skip
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    return X32[:train_rows].astype(np.float64), y[:train_rows], X32[train_rows:]


def fit_model(spec: ModelSpec, quick: bool, X: np.ndarray, y: np.ndarray) -> Fitted:
    trees = spec.quick_trees if quick else spec.trees
    start = time.perf_counter()
    if spec.key == "lgbm500":
        import lightgbm

        est: Any = lightgbm.LGBMClassifier(
            n_estimators=trees, num_leaves=31, learning_rate=0.05, random_state=0, deterministic=True,
            force_row_wise=True, verbose=-1, n_jobs=os.cpu_count(),
        ).fit(X, y)  # fmt: skip
        est.set_params(n_jobs=1)
        desc = f"LightGBM LGBMClassifier, {trees} trees, num_leaves 31"
    elif spec.key == "xgb500":
        import xgboost

        est = xgboost.XGBClassifier(n_estimators=trees, max_depth=6, learning_rate=0.05, random_state=0, tree_method="hist", n_jobs=os.cpu_count())
        est.fit(X, y)
        est.set_params(n_jobs=1)
        desc = f"XGBoost XGBClassifier, {trees} trees, max_depth 6"
    elif spec.key == "rf100":
        from sklearn.ensemble import RandomForestClassifier

        est = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=-1).fit(X, y)
        est.set_params(n_jobs=1)
        depths = [t.tree_.max_depth for t in est.estimators_]
        nodes = sum(t.tree_.node_count for t in est.estimators_)
        desc = f"scikit-learn RandomForestClassifier, {trees} fully grown trees (depth {min(depths)}-{max(depths)}, {nodes:,} nodes)"
    elif spec.key == "hgb200":
        from sklearn.ensemble import HistGradientBoostingClassifier

        est = HistGradientBoostingClassifier(max_iter=trees, early_stopping=False, random_state=0).fit(X, y)
        desc = f"scikit-learn HistGradientBoostingClassifier, max_iter {trees} (no early stopping), max_leaf_nodes 31"
    else:
        raise KeyError(spec.key)
    return Fitted(spec.key, f"{desc}, {N_FEATURES} features, {len(X):,} training rows", est, time.perf_counter() - start)


# ---- engines in this process ---------------------------------------------------------------------------


@dataclass
class Engine:
    """One way to score a model: a float32 rows -> P(class) function, or why there is none."""

    name: str
    score: Callable[[np.ndarray], np.ndarray] | None
    error: str | None = None
    note: str = ""
    setup_s: float | None = None


def library_engine(fitted: Fitted) -> Engine:
    est = fitted.estimator
    return Engine("library", lambda X: est.predict_proba(X), note=f"{type(est).__name__}.predict_proba")


@contextlib.contextmanager
def bools_as_ints_in_node_attributes() -> Iterator[None]:
    """skl2onnx 1.20's HistGradientBoosting converter writes Python False (leaf nodes) into
    nodes_missing_value_tracks_true, which onnx 1.23's make_attribute rejects ("Expected an int, got a
    boolean"); this turns bools in list attributes into ints while converting."""
    from skl2onnx.common import _container

    original = _container.make_node

    def make_node(*args: Any, **attrs: Any) -> Any:
        for name, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, (bool, np.bool_)) for v in value):
                attrs[name] = [int(v) for v in value]
        return original(*args, **attrs)

    _container.make_node = make_node
    try:
        yield
    finally:
        _container.make_node = original


def convert_to_onnx(fitted: Fitted) -> tuple[Any, str]:
    """(ONNX model, how it was converted)."""
    from onnxmltools.convert.common.data_types import FloatTensorType

    est = fitted.estimator
    initial = [("X", FloatTensorType([None, N_FEATURES]))]
    spec = SPECS[fitted.key]
    if spec.library == "lightgbm":
        import onnxmltools

        return onnxmltools.convert_lightgbm(est, initial_types=initial, zipmap=False), "onnxmltools.convert_lightgbm(zipmap=False)"
    if spec.library == "xgboost":
        import onnxmltools

        return onnxmltools.convert_xgboost(est, initial_types=initial), "onnxmltools.convert_xgboost (probabilities as a tensor)"
    from skl2onnx import to_onnx

    sample = np.zeros((1, N_FEATURES), dtype=np.float32)
    options = {id(est): {"zipmap": False}}
    try:
        return to_onnx(est, sample, options=options), "skl2onnx.to_onnx(zipmap=False)"
    except (ValueError, TypeError) as exc:
        if "Expected an int, got a boolean" not in str(exc.__cause__ or exc):
            raise
    with bools_as_ints_in_node_attributes():
        onx = to_onnx(est, sample, options=options)
    return onx, "skl2onnx.to_onnx(zipmap=False), with bools in node attributes cast to int (skl2onnx 1.20 + onnx 1.23 bug)"


def onnx_engine(fitted: Fitted) -> Engine:
    start = time.perf_counter()
    try:
        import onnxruntime as ort

        onx, how = convert_to_onnx(fitted)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # the LightGBM model declares label shape [1]: a warning on every call otherwise
        session = ort.InferenceSession(onx.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any conversion failure is reported in the column
        return Engine("onnx", None, error=_one_line(exc), setup_s=time.perf_counter() - start)
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    wanted = [next((o for o in outputs if "prob" in o.lower()), outputs[-1])]
    return Engine("onnx", lambda X: session.run(wanted, {name: X})[0], note=how, setup_s=time.perf_counter() - start)


def tensorwire_engine(fitted: Fitted, workdir: pathlib.Path) -> Engine:
    start = time.perf_counter()
    try:
        from tensorwire.server.modeling.export import export
        from tensorwire.server.modeling.registry import build_scorer
        from tensorwire.server.repository.model_format import load_model

        path = export(fitted.estimator, workdir / "tensorwire" / fitted.key / "1", dtype="float32")
        stored = load_model(path)
        scorer = build_scorer(stored.manifest, stored.arrays)
        kind = getattr(stored.manifest, "kind", "?")
    except Exception as exc:  # noqa: BLE001 - the column says error, the rest of the run goes on
        return Engine("tensorwire", None, error=_one_line(exc), setup_s=time.perf_counter() - start)
    return Engine("tensorwire", lambda X: scorer.score(X, ["predict_proba"])[0], note=f"kind {kind}", setup_s=time.perf_counter() - start)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 400 else text[:400] + " ..."


def positive_class(p: Any) -> np.ndarray:
    """P(class 1) per row from an (n, 2) or (n,) probability output."""
    a = np.asarray(p, dtype=np.float64)
    return a[:, -1] if a.ndim == 2 else a.reshape(-1)


# ---- lleaves in its own virtualenv ---------------------------------------------------------------------


class SetupError(Exception):
    """lleaves' virtualenv could not be made: the lleaves column says why."""


def run_child(command: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a process group of its own, which is killed whole (pip's and venv's own children
    included) when the command times out or this script is interrupted (Ctrl-C, SIGTERM)."""
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def lightgbm_version() -> str:
    import lightgbm

    return str(lightgbm.__version__)


def installed_versions(venv: pathlib.Path) -> dict[str, str] | None:
    """lleaves', llvmlite's, numpy's and lightgbm's versions in the venv, or None when they do not import."""
    python = venv_python(venv)
    if not python.exists():
        return None
    probe = (
        "import json, importlib.metadata as m; import lleaves, llvmlite, numpy, lightgbm; "
        "print(json.dumps({n: m.version(n) for n in ('lleaves', 'llvmlite', 'numpy', 'lightgbm')}))"
    )
    done = run_child([str(python), "-c", probe], 120, clean_env(venv))
    if done.returncode != 0:
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ensure_venv(venv: pathlib.Path) -> dict[str, str]:
    """Reuse the venv when it holds lleaves 1.3.0, an llvmlite below 0.45 and this LightGBM; otherwise (re)fill it from PyPI."""
    wanted = {"lleaves": LLEAVES_VERSION, "lightgbm": lightgbm_version()}
    versions = installed_versions(venv)
    if versions is not None and all(versions.get(k) == v for k, v in wanted.items()) and older(versions.get("llvmlite", ""), LLVMLITE_BELOW):
        progress(f"reusing {venv} ({versions})")
        return versions
    requirements = [f"{name}=={version}" for name, version in wanted.items()] + [f"llvmlite<{LLVMLITE_BELOW}", "numpy"]
    progress(f"creating {venv} and installing {' '.join(requirements)} from PyPI (a minute or two) ...")
    if not venv_python(venv).exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        made = run_child([sys.executable, "-m", "venv", str(venv)], SETUP_TIMEOUT_S)
        if made.returncode != 0:
            raise SetupError(f"`{sys.executable} -m venv {venv}` failed: {made.stderr.strip()[-2000:]}")
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    for command in (pip + ["--upgrade", "pip"], pip + requirements):
        done = run_child(command, SETUP_TIMEOUT_S, clean_env(venv))
        if done.returncode != 0:
            raise SetupError(f"`{shlex.join(command)}` failed (exit {done.returncode}): {(done.stdout + done.stderr).strip()[-2000:]}")
    versions = installed_versions(venv)
    if versions is None:
        raise SetupError(f"lleaves was installed into {venv} but `import lleaves, llvmlite, numpy, lightgbm` fails there")
    return versions


@dataclass
class LleavesResult:
    timings: dict[int, Timing] = field(default_factory=dict)
    probabilities: np.ndarray | None = None
    versions: dict[str, str] = field(default_factory=dict)
    compile_s: float | None = None
    cache: str = ""
    cache_hit: bool = False
    lightgbm_in_venv_max_diff: float | None = None
    error: str | None = None


def run_lleaves(venv: pathlib.Path, fitted: Fitted, rows: np.ndarray, plan: TimingPlan, workdir: pathlib.Path) -> LleavesResult:
    """Save model.txt and the rows, run this file's --lleaves-worker in lleaves' venv, read back its JSON."""
    try:
        versions = ensure_venv(venv)
    except (SetupError, subprocess.TimeoutExpired) as exc:
        return LleavesResult(error=f"lleaves virtualenv: {exc}")
    folder = workdir / "lleaves" / fitted.key
    folder.mkdir(parents=True, exist_ok=True)
    model_txt = folder / "model.txt"
    fitted.estimator.booster_.save_model(str(model_txt))
    np.save(folder / "rows.npy", rows)
    digest = hashlib.sha256(model_txt.read_bytes()).hexdigest()[:16]
    cache = LLEAVES_CACHE / f"{fitted.key}-{digest}-lleaves{versions['lleaves']}-llvmlite{versions['llvmlite']}-{platform.machine()}.o"
    LLEAVES_CACHE.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "model": str(model_txt), "rows": str(folder / "rows.npy"), "cache": str(cache), "batches": list(BATCHES),
        "plan": asdict(plan), "out": str(folder / "result.json"), "probabilities": str(folder / "probabilities.npy"),
    }  # fmt: skip
    (folder / "spec.json").write_text(json.dumps(spec))
    progress(f"lleaves: {'loading cached' if cache.exists() else 'compiling (first time: can take a minute or more)'} {cache.name} ...")
    command = [str(venv_python(venv)), str(pathlib.Path(__file__).resolve()), "--lleaves-worker", str(folder / "spec.json")]
    try:
        done = run_child(command, WORKER_TIMEOUT_S, clean_env(venv))
    except subprocess.TimeoutExpired:
        return LleavesResult(versions=versions, error=f"lleaves worker ran past {WORKER_TIMEOUT_S} s")
    if done.returncode != 0:
        return LleavesResult(versions=versions, error=f"lleaves worker exit {done.returncode}: {(done.stdout + done.stderr).strip()[-1500:]}")
    result = json.loads(pathlib.Path(spec["out"]).read_text())
    return LleavesResult(
        timings={int(b): Timing(**t) for b, t in result["timings"].items()},
        probabilities=np.load(spec["probabilities"]), versions=versions, compile_s=result["compile_s"],
        cache=str(cache.relative_to(ROOT)), cache_hit=result["cache_hit"], lightgbm_in_venv_max_diff=result["lightgbm_max_diff"],
    )  # fmt: skip


def lleaves_worker(spec_path: str) -> int:
    """Runs in lleaves' venv: compile (or load from cache), check against LightGBM there, time predict(X, n_jobs=1)."""
    import lightgbm
    import lleaves

    spec = json.loads(pathlib.Path(spec_path).read_text())
    rows = np.load(spec["rows"])
    plan = TimingPlan(**spec["plan"])
    model = lleaves.Model(model_file=spec["model"])
    cache_hit = pathlib.Path(spec["cache"]).exists()
    start = time.perf_counter()
    model.compile(cache=spec["cache"])
    compile_s = time.perf_counter() - start
    p = model.predict(rows, n_jobs=1)
    np.save(spec["probabilities"], p)
    reference = lightgbm.Booster(model_file=spec["model"]).predict(rows, num_threads=1)
    timings = time_batches(lambda X: model.predict(X, n_jobs=1), rows, spec["batches"], plan)
    result = {
        "compile_s": compile_s, "cache_hit": cache_hit, "lightgbm_max_diff": float(np.max(np.abs(p - reference))),
        "timings": {str(b): asdict(t) for b, t in timings.items()},
    }  # fmt: skip
    pathlib.Path(spec["out"]).write_text(json.dumps(result))
    return 0


# ---- one model -----------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    key: str
    description: str
    fit_s: float
    timings: dict[str, dict[int, Timing]] = field(default_factory=dict)  # engine -> batch -> timing
    max_diff: dict[str, float] = field(default_factory=dict)  # engine -> max |Δp| against the library
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    setup_s: dict[str, float] = field(default_factory=dict)


def check_engine(engine: Engine, rows: np.ndarray, reference: np.ndarray, result: ModelResult) -> bool:
    """Score the check rows once; record max |Δp| against the library, or the error."""
    assert engine.score is not None
    try:
        p = positive_class(engine.score(readonly(rows)))
        if p.shape != reference.shape:
            raise ValueError(f"{engine.name} returned {p.shape[0]} probabilities for {reference.shape[0]} rows")
    except Exception as exc:  # noqa: BLE001
        result.errors[engine.name] = _one_line(exc)
        return False
    result.max_diff[engine.name] = float(np.max(np.abs(p - reference)))
    return True


def bench_model(fitted: Fitted, rows: np.ndarray, plan: TimingPlan, options: argparse.Namespace, workdir: pathlib.Path) -> ModelResult:
    from threadpoolctl import threadpool_limits

    result = ModelResult(fitted.key, fitted.description, fitted.fit_s)
    engines = [library_engine(fitted)]
    if not options.no_onnx:
        progress(f"{fitted.key}: converting to ONNX ...")
        engines.append(onnx_engine(fitted))
    progress(f"{fitted.key}: exporting to tensorwire ...")
    engines.append(tensorwire_engine(fitted, workdir))
    with threadpool_limits(limits=1):
        reference = positive_class(fitted.estimator.predict_proba(rows))
        for engine in engines:
            result.notes[engine.name] = engine.note
            if engine.setup_s is not None:
                result.setup_s[engine.name] = engine.setup_s
            if engine.score is None:
                result.errors[engine.name] = engine.error or "unavailable"
                continue
            if not check_engine(engine, rows, reference, result):
                continue
            progress(f"{fitted.key}: timing {engine.name} (max |Δp| {result.max_diff[engine.name]:.2e}) ...")
            try:
                result.timings[engine.name] = time_batches(engine.score, rows, BATCHES, plan)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                result.errors[engine.name] = _one_line(exc)
    if SPECS[fitted.key].library == "lightgbm" and not options.no_lleaves:
        add_lleaves(result, fitted, rows, reference, plan, options, workdir)
    return result


def add_lleaves(result: ModelResult, fitted: Fitted, rows: np.ndarray, reference: np.ndarray, plan: TimingPlan,
                options: argparse.Namespace, workdir: pathlib.Path) -> None:  # fmt: skip
    progress(f"{fitted.key}: lleaves ...")
    ll = run_lleaves(options.lleaves_venv.resolve(), fitted, rows, plan, workdir)
    if ll.error is not None:
        result.errors["lleaves"] = ll.error
        return
    assert ll.probabilities is not None
    result.timings["lleaves"] = ll.timings
    result.max_diff["lleaves"] = float(np.max(np.abs(positive_class(ll.probabilities) - reference)))
    hit = "loaded from cache" if ll.cache_hit else "compiled"
    result.notes["lleaves"] = (
        f"lleaves {ll.versions.get('lleaves')} (llvmlite {ll.versions.get('llvmlite')}, numpy {ll.versions.get('numpy')}), "
        f"{hit} in {ll.compile_s:.1f} s ({ll.cache}); LightGBM {ll.versions.get('lightgbm')} in that venv agrees to {ll.lightgbm_in_venv_max_diff:.1e}"
    )
    result.setup_s["lleaves"] = float(ll.compile_s or 0.0)


# ---- report --------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": platform.python_version()}
    for package in ("numpy", "numba", "scikit-learn", "lightgbm", "xgboost", "onnxruntime", "skl2onnx", "onnxmltools", "onnx", "threadpoolctl", "tensorwire"):
        out[package] = "not installed"
        for distribution in (package, f"{package}-cpu"):  # the test extra installs xgboost as xgboost-cpu
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                out[package] = importlib.metadata.version(distribution)
                break
    return out


def fastest(row: dict[str, float | None]) -> tuple[str | None, float | None]:
    """(fastest engine, fastest other engine / tensorwire) for one model and batch."""
    timed = {k: v for k, v in row.items() if v is not None}
    best = min(timed, key=lambda k: timed[k]) if timed else None
    others = [v for k, v in timed.items() if k != "tensorwire"]
    tw = timed.get("tensorwire")
    return best, (min(others) / tw if tw and others else None)


def table_rows(results: Sequence[ModelResult], engines: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for batch in BATCHES:
            us = {e: (r.timings[e][batch].median_us if e in r.timings and batch in r.timings[e] else None) for e in engines}
            best, ratio = fastest(us)
            wrong = r.max_diff.get("tensorwire", 0.0) >= TW_TOLERANCE
            rows.append({
                "model": r.key, "batch": batch, "us": us, "fastest": best, "tw_vs_best_other": None if wrong else ratio,
                "tensorwire_wrong": wrong, "errors": {e: r.errors.get(e) for e in engines},
            })  # fmt: skip
    return rows


def fmt_us(value: float | None, error: str | None) -> str:
    if value is None:
        return "error" if error else "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def cells(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    engines = report["engines"]
    header = ["model", "batch", *[f"{e} µs" for e in engines], "tw vs best other", "fastest"]
    out = []
    for row in report["rows"]:
        ratio = row["tw_vs_best_other"]
        out.append([
            row["model"], str(row["batch"]), *[fmt_us(row["us"][e], row["errors"][e]) for e in engines],
            "WRONG ANSWERS" if row["tensorwire_wrong"] else ("-" if ratio is None else f"{ratio:.2f}x"), row["fastest"] or "-",
        ])  # fmt: skip
    return header, out


def header_lines(report: dict[str, Any]) -> list[str]:
    v, m, s = report["versions"], report["machine"], report["settings"]
    lines = [
        f"command: {report['command']}",
        f"machine: {m['cpus']} CPUs ({m['processor']}), {m['platform']}, load average before {m['load_before']}, after {m['load_after']}",
        "engines: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    busy = m["load_before"][0] if m["load_before"] else 0.0
    if m["cpus"] and busy > 0.5 * m["cpus"]:
        lines.append(f"WARNING: 1-minute load average {busy} on {m['cpus']} CPUs at the start: other processes compete for the cores, figures are noisy")
    if report.get("lleaves_venv"):
        lines.append(f"lleaves venv {report['lleaves_venv']['path']}: " + ", ".join(f"{k} {val}" for k, val in report["lleaves_venv"]["versions"].items()))
    lines.append(
        f"timing: 1 thread everywhere, float32 rows; median of {s['repeats']} blocks (batch 4096: {s['repeats_large']}) of >= {s['repeat_ms']:g} ms "
        f"after {s['warmup_ms']:g} ms warm-up; µs per call"
    )
    for r in report["models"]:
        lines.append(f"{r['key']}: {r['description']} (fit {r['fit_s']:.1f} s)")
        for engine in report["engines"]:
            diff, note, error = r["max_diff"].get(engine), r["notes"].get(engine, ""), r["errors"].get(engine)
            setup = r["setup_s"].get(engine)
            parts = [f"  {engine}:"]
            if diff is not None:
                flag = " FAIL (> 1e-4)" if engine == "tensorwire" and diff >= TW_TOLERANCE else ""
                parts.append(f"max |Δp| vs library {diff:.1e}{flag};")
            if setup is not None and engine != "library":
                parts.append(f"setup {setup:.1f} s;")
            if note:
                parts.append(note)
            if error:
                parts.append(f"ERROR {error}")
            if len(parts) > 1:
                lines.append(" ".join(parts))
    return lines


def format_text(report: dict[str, Any]) -> str:
    header, body = cells(report)
    widths = [max(len(c[i]) for c in [header, *body]) for i in range(len(header))]
    lines = [*header_lines(report), "", "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    previous = None
    for c in body:
        if previous is not None and c[0] != previous:
            lines.append("")
        previous = c[0]
        lines.append("  ".join(x.rjust(w) for x, w in zip(c, widths)))
    lines.append("\ntw vs best other = fastest other engine's µs / tensorwire's µs (>1: tensorwire is faster)")
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    header, body = cells(report)
    lines = ["```text", *header_lines(report), "```", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in body]
    lines.append("\n`tw vs best other` = fastest other engine's µs / tensorwire's µs (>1: tensorwire is faster)")
    return "\n".join(lines) + "\n"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---- main ----------------------------------------------------------------------------------------------


def plan_for(options: argparse.Namespace) -> TimingPlan:
    if options.quick:
        return TimingPlan(repeats=7, repeats_large=3, repeat_ms=options.repeat_ms or 20.0, warmup_ms=50.0)
    return TimingPlan(repeats=25, repeats_large=7, repeat_ms=options.repeat_ms or 50.0, warmup_ms=200.0)


def run(options: argparse.Namespace, workdir: pathlib.Path) -> dict[str, Any]:
    os.environ["TENSORWIRE_KERNEL_THREADS"] = "1"  # before tensorwire's kernel config is imported
    with contextlib.suppress(Exception):
        from tensorwire.kernels.config import apply_thread_budget

        apply_thread_budget()
    plan = plan_for(options)
    engines = [e for e in ENGINES if not (e == "onnx" and options.no_onnx) and not (e == "lleaves" and options.no_lleaves)]
    load_before = load_average()
    results: list[ModelResult] = []
    data: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key in options.models:
        spec = SPECS[key]
        rows_n = spec.quick_train_rows if options.quick else spec.train_rows
        if rows_n not in data:
            data[rows_n] = make_data(rows_n)
        X, y, check = data[rows_n]
        progress(f"{key}: fitting ...")
        fitted = fit_model(spec, options.quick, X, y)
        progress(f"{key}: {fitted.description}, fitted in {fitted.fit_s:.1f} s")
        results.append(bench_model(fitted, check, plan, options, workdir))
    lleaves_venv = None
    if "lleaves" in engines:
        venv = options.lleaves_venv.resolve()
        found = installed_versions(venv) if venv_python(venv).exists() else None
        lleaves_venv = {"path": str(venv), "versions": found or {}}
    report = {
        "benchmark": "bench_trees",
        "command": "python benchmarks/bench_trees.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "platform": platform.platform(),
            "load_before": load_before, "load_after": load_average(),
        },
        "versions": versions(),
        "lleaves_venv": lleaves_venv,
        "settings": {**asdict(plan), "quick": options.quick, "batches": list(BATCHES), "check_rows": CHECK_ROWS, "tensorwire_tolerance": TW_TOLERANCE},
        "engines": engines,
        "models": [model_dict(r) for r in results],
    }  # fmt: skip
    report["rows"] = table_rows(results, engines)
    report["tensorwire_agrees"] = {r.key: (r.max_diff["tensorwire"] < TW_TOLERANCE if "tensorwire" in r.max_diff else None) for r in results}
    return report


def model_dict(r: ModelResult) -> dict[str, Any]:
    d = asdict(r)
    d["timings"] = {e: {str(b): asdict(t) for b, t in by.items()} for e, by in r.timings.items()}
    return d


def parse_models(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {','.join(SPECS)}")
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: 50-tree models (rf: 20 trees, 5k training rows), fewer and shorter repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress goes to stderr)")
    parser.add_argument("--markdown", type=pathlib.Path, default=None, metavar="FILE", help="also write the table as markdown")
    parser.add_argument("--models", type=parse_models, default=list(SPECS), help=f"comma-separated subset of {','.join(SPECS)} (default all)")
    parser.add_argument("--no-lleaves", action="store_true", help="skip lleaves (and its virtualenv)")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--lleaves-venv", type=pathlib.Path, default=DEFAULT_VENV, help=f"lleaves' virtualenv (default {DEFAULT_VENV.relative_to(ROOT)})")
    parser.add_argument("--repeat-ms", type=float, default=None, help="shortest timed block in ms (default 50; 20 with --quick)")
    parser.add_argument("--lleaves-worker", default=None, help=argparse.SUPPRESS)  # internal: run inside lleaves' venv
    args = parser.parse_args(argv)
    if args.lleaves_worker:
        return lleaves_worker(args.lleaves_worker)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through run_child, which kills its child's process group

    signal.signal(signal.SIGTERM, on_signal)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tw-trees-") as tmp:
        report = run(args, pathlib.Path(tmp))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2, default=_json_default))
    else:
        print(format_text(report))
        print(f"\nwhole run {report['wall_s']:.0f} s")
    if args.markdown:
        args.markdown.write_text(format_markdown(report))
        progress(f"markdown written to {args.markdown}")
    return 1 if any(agrees is False for agrees in report["tensorwire_agrees"].values()) else 0  # wrong answers fail the run


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc(limit=0)
        sys.exit(130)
