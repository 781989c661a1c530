"""tensorwire beside MLServer (Seldon) with its scikit-learn runtime: same fits, same load, one run.

MLServer 1.7.1 needs protobuf<7 and tensorwire needs protobuf 7, so MLServer
lives in its own virtualenv, which this script creates (default
build/mlserver-venv, reused when it already holds the right versions) and
fills from PyPI with `pip install mlserver==1.7.1 mlserver-sklearn==1.7.1
scikit-learn==<this interpreter's version> "uvloop<0.22"` (the same
scikit-learn, so the joblib files unpickle exactly as fitted; uvloop 0.22
breaks MLServer 1.7.1's parallel workers, SeldonIO/MLServer#2286). If that install fails the script says
why and exits with status 2.

The scikit-learn models are fitted once, with fixed seeds (the logistic and
SVC fits of bench_protocol_modes.py, and a HistGradientBoostingClassifier on
that script's 20-feature, 4-class synthetic data), and saved twice: as `model.joblib` with a
`model-settings.json` (implementation mlserver_sklearn.SKLearnModel) for
MLServer, and with `tensorwire.export(..., dtype="float32")` for tensorwire.
Both servers run at once on loopback ports, each with its metrics endpoint off
and the same number of worker processes, and both are driven by the load
generator of `tensorwire bench` (tensorwire.client.bench: the same client
processes, channels, warm-up and window), the pairs back to back in every round.
The requests name their outputs (`predict` and `predict_proba` for a
classifier with probabilities, `predict` otherwise), which both servers
produce under those names, so both do the same work; the server's CPU time per
request comes from /proc (utime+stime of its whole process tree). Every model
is measured at every --batch and --concurrency point, except that a model may
skip the lowest concurrencies (the tree ensemble is measured only at
concurrency 2 and up: 16 in the full run, 4 with --quick).

    python benchmarks/bench_mlserver.py                       # full run (about 9 minutes, plus the first install)
    python benchmarks/bench_mlserver.py --quick               # smoke test
    python benchmarks/bench_mlserver.py --markdown results.md # also write the table as markdown
    python benchmarks/bench_mlserver.py --json                # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_protocol_modes import (
    N_FEATURES,
    START_TIMEOUT_S,
    SVC_FEATURES,
    SVC_TRAIN_ROWS,
    Server,
    WindowSampler,
    cpu_seconds,
    fit_logistic,
    fit_svc,
    load_average,
    per_request_us,
    start_tensorwire,
    stop_server,
    synthetic_data,
    wait_ready,
)
from peer_venvs import clean_env, older, venv_python

MLSERVER_VERSION = "1.7.1"
DEFAULT_VENV = ROOT / "build" / "mlserver-venv"
RTOL, ATOL = 1e-4, 1e-5  # probabilities: FP32 scoring (tensorwire) against float64 scikit-learn (MLServer)
INSTALL_FAILED = 2
# uvloop 0.22 (October 2025) breaks MLServer 1.7.1's parallel inference workers: each dies at start with
# "RuntimeError: There is no current event loop in thread 'MainThread'" (SeldonIO/MLServer#2286, fix
# proposed in #2285, unreleased). Pinning uvloop below 0.22 is the workaround given there.
UVLOOP_BELOW = "0.22"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- MLServer's virtualenv -----------------------------------------------------------------------------


class SetupError(Exception):
    """MLServer could not be installed or started: reported in one paragraph, exit status 2."""


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def installed_versions(venv: pathlib.Path) -> dict[str, str] | None:
    """MLServer's, its runtime's and scikit-learn's versions in the venv, or None when it cannot import them."""
    python = venv_python(venv)
    if not python.exists():
        return None
    probe = (
        "import json, importlib.metadata as m; import mlserver, mlserver_sklearn, sklearn; "
        "print(json.dumps({n: m.version(n) for n in ('mlserver', 'mlserver-sklearn', 'scikit-learn', 'protobuf', 'uvloop')}))"
    )
    done = subprocess.run([str(python), "-c", probe], check=False, capture_output=True, text=True, env=clean_env(venv))
    if done.returncode != 0:
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ensure_venv(venv: pathlib.Path) -> dict[str, str]:
    """Reuse the venv when it holds MLServer 1.7.1 and this scikit-learn; otherwise (re)create it and pip install."""
    wanted = {"mlserver": MLSERVER_VERSION, "mlserver-sklearn": MLSERVER_VERSION, "scikit-learn": sklearn_version()}
    versions = installed_versions(venv)
    if versions is not None and all(versions.get(k) == v for k, v in wanted.items()) and older(versions.get("uvloop", ""), UVLOOP_BELOW):
        progress(f"reusing {venv} ({versions})")
        return versions
    requirements = [f"{name}=={version}" for name, version in wanted.items()] + [f"uvloop<{UVLOOP_BELOW}"]
    progress(f"creating {venv} and installing {' '.join(requirements)} from PyPI (a minute or two) ...")
    if not venv_python(venv).exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False, capture_output=True, text=True)
        if made.returncode != 0:
            raise SetupError(f"`{sys.executable} -m venv {venv}` failed:\n{made.stderr.strip()[-3000:]}")
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    for command in (pip + ["--upgrade", "pip"], pip + requirements):
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=clean_env(venv))
        if done.returncode != 0:
            raise SetupError(
                f"`{shlex.join(command)}` failed (exit {done.returncode}); MLServer cannot be measured here.\n"
                f"{(done.stdout + done.stderr).strip()[-3000:]}"
            )
    versions = installed_versions(venv)
    if versions is None:
        raise SetupError(f"MLServer was installed into {venv} but `import mlserver, mlserver_sklearn` fails there")
    return versions




# ---- models --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    name: str
    description: str
    width: int
    outputs: tuple[str, ...]
    min_concurrency: int = 1  # load points below this --concurrency are skipped for this model


def fit_hgb() -> Any:
    """A gradient-boosted tree ensemble on bench_protocol_modes.py's synthetic data: 100 iterations x 4 classes."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = synthetic_data()
    return HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=31, early_stopping=False, random_state=0).fit(X, y)


def fit_models(svc_rows: int, svc_features: int) -> dict[str, tuple[Any, ModelCase]]:
    logistic = fit_logistic()
    svc = fit_svc(svc_rows, svc_features)
    hgb = fit_hgb()
    trees = hgb.n_iter_ * hgb.n_trees_per_iteration_
    return {
        "logistic": (logistic, ModelCase("logistic", f"LogisticRegression, {N_FEATURES} features, 4 classes", N_FEATURES, ("predict", "predict_proba"))),
        "svc": (svc, ModelCase("svc", f"SVC(kernel='rbf'), {svc_features} features, 4 classes, {int(svc.n_support_.sum())} support vectors", svc_features, ("predict",))),
        "hgb": (hgb, ModelCase(
            "hgb", f"HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=31), {N_FEATURES} features, {len(hgb.classes_)} classes, {trees} trees",
            N_FEATURES, ("predict", "predict_proba"), min_concurrency=2,
        )),
    }  # fmt: skip


def mlserver_outputs(estimator: Any, outputs: Sequence[str]) -> list[dict[str, Any]]:
    """model-settings.json outputs: predict [-1, 1] of the labels' type, predict_proba [-1, number of classes] FP64."""
    declared = []
    for name in outputs:
        if name == "predict":
            labels = np.asarray(estimator.classes_)
            if labels.dtype.kind not in "iu":
                raise ValueError(f"{type(estimator).__name__}: integer class labels expected, got {labels.dtype}")
            declared.append({"name": name, "datatype": "INT64", "shape": [-1, 1]})
        else:
            declared.append({"name": name, "datatype": "FP64", "shape": [-1, len(estimator.classes_)]})
    return declared


def write_repositories(models: dict[str, tuple[Any, ModelCase]], root: pathlib.Path, mlserver_settings: dict[str, Any]) -> tuple[pathlib.Path, pathlib.Path]:
    """root/tensorwire/<name>/1/model.npz and root/mlserver/<name>/{model.joblib, model-settings.json} + settings.json."""
    import joblib

    import tensorwire

    tw_root, ml_root = root / "tensorwire", root / "mlserver"
    for name, (estimator, case) in models.items():
        tensorwire.export(estimator, tw_root / name / "1", dtype="float32")
        folder = ml_root / name
        folder.mkdir(parents=True)
        joblib.dump(estimator, folder / "model.joblib")
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, case.width]}],
            "outputs": mlserver_outputs(estimator, case.outputs),
        }, indent=2))  # fmt: skip
    (ml_root / "settings.json").write_text(json.dumps(mlserver_settings, indent=2))
    return tw_root, ml_root


# ---- MLServer ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlserver_settings(parallel_workers: int) -> dict[str, Any]:
    """settings.json: loopback ports, metrics off (as tensorwire's --metrics-port 0), access logs off, N inference workers."""
    return {
        "host": "127.0.0.1",
        "grpc_port": free_port(),
        "http_port": free_port(),  # MLServer always serves REST too; nothing sends to it
        "metrics_port": free_port(),
        "metrics_endpoint": None,  # no metrics server and no per-request Prometheus interceptor
        "debug": False,  # debug (the default) adds a per-request access-log interceptor
        "parallel_workers": parallel_workers,
        "load_models_at_startup": True,
    }


def start_mlserver(venv: pathlib.Path, repository: pathlib.Path, settings: dict[str, Any], models: Sequence[str], log_path: pathlib.Path) -> Server:
    from tensorwire.client import InferenceClient, InferenceServerError

    command = [str(venv / "bin" / "mlserver"), "start", str(repository)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=repository, env=clean_env(venv))
    server = Server("MLServer", process, f"127.0.0.1:{settings['grpc_port']}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    wait_ready(server, deadline)
    with InferenceClient(server.url, retry=None) as client:
        for model in models:
            while True:
                with contextlib.suppress(InferenceServerError):
                    if client.model_ready(model, timeout=2):
                        break
                if server.process.poll() is not None or time.monotonic() > deadline:
                    raise SetupError(f"MLServer did not load model '{model}':\n{server.log_tail()}")
                time.sleep(0.2)
    return server


# ---- checks and load -----------------------------------------------------------------------------------


def request_bytes(case: ModelCase, batch: int, count: int, seed: int) -> list[bytes]:
    from tensorwire.client._requests import build_infer_request

    rng = np.random.default_rng(seed)
    return [
        build_infer_request(case.name, {"input": rng.standard_normal((batch, case.width)).astype(np.float32)}, outputs=case.outputs).SerializeToString()
        for _ in range(count)
    ]  # fmt: skip


def check_answers(servers: Sequence[Server], models: dict[str, tuple[Any, ModelCase]]) -> dict[str, dict[str, bool]]:
    """Each server's answer to one request of 16 rows against scikit-learn's, per model: labels equal, probabilities close."""
    from tensorwire.client import InferenceClient

    X = np.random.default_rng(7).standard_normal((16, max(c.width for _, c in models.values()))).astype(np.float32)
    agree: dict[str, dict[str, bool]] = {}
    for server in servers:
        with InferenceClient(server.url, retry=None, validate_inputs=False) as client:
            for name, (estimator, case) in models.items():
                Xm = X[:, : case.width]
                got = client.infer(name, Xm, outputs=list(case.outputs), timeout=60)
                labels = np.asarray(got["predict"]).reshape(-1)  # MLServer answers [N, 1] where tensorwire answers [N]
                ok = bool(np.array_equal(labels.astype(np.int64), estimator.predict(Xm)))
                if "predict_proba" in case.outputs:
                    ok = ok and bool(np.allclose(got["predict_proba"], estimator.predict_proba(Xm), rtol=RTOL, atol=ATOL))
                agree.setdefault(server.name, {})[name] = ok
    return agree


def prewarm(servers: Sequence[Server], models: dict[str, tuple[Any, ModelCase]], batches: Sequence[int]) -> None:
    """Every batch size to every model on 8 connections per server, so every worker process has served each before timing."""
    import grpc

    from tensorwire.client.bench import UNARY_METHOD
    from tensorwire.client.channels import channel_options

    for server in servers:
        channels = [grpc.insecure_channel(server.url, options=channel_options(i, max_message_bytes=64 << 20, keepalive=None, extra=())) for i in range(8)]
        try:
            for _, case in models.values():
                for batch in batches:
                    payload = request_bytes(case, batch, 1, seed=5)[0]
                    for channel in channels:
                        for _ in range(3):
                            channel.unary_unary(UNARY_METHOD)(payload, timeout=120)
        finally:
            for channel in channels:
                channel.close()


def cli_smoke(server: Server, model: str) -> dict[str, Any]:
    """`tensorwire bench` itself (the CLI, no outputs named: the server's default outputs) against a server, one short point."""
    command = [
        sys.executable, "-m", "tensorwire", "bench", "--url", server.url, "--model", model, "--batch", "1",
        "--concurrency", "4", "--duration", "2s", "--warmup", "0.5s", "--processes", "1", "--json", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    result: dict[str, Any] = {"command": "tensorwire bench " + shlex.join(command[3:]), "exit": done.returncode}
    if done.returncode in (0, 1):
        point = json.loads(done.stdout)["points"][0]
        result.update(requests_per_s=point["requests_per_s"], errors=point["errors"], first_error=point["first_error"])
    else:
        result["stderr"] = done.stderr.strip()[-500:]
    return result


@dataclass
class Row:
    server: str
    model: str
    batch: int
    concurrency: int
    round: int
    requests: int
    errors: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us_per_request: float
    server_cores: float
    client_cores: float
    other_cores: float
    first_error: str | None = None


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    processes: int
    channels: int
    rounds: int
    batches: tuple[int, ...]
    concurrency: tuple[int, ...]
    tensorwire_workers: int
    mlserver_parallel_workers: int
    svc_rows: int
    svc_features: int


def load_point(processes: Any, server: Server, case: ModelCase, batch: int, concurrency: int, settings: Settings, rnd: int) -> Row:
    """One closed-loop point with tensorwire bench's engine; server, client and machine CPU read around its window."""
    from tensorwire.client.bench import START_LEAD_S, Job, split, summarize

    payloads = request_bytes(case, batch, 8, seed=rnd)
    start = time.time() + (START_LEAD_S if processes.count > 1 else 0.05)
    jobs = [
        Job(server.url, False, payloads, share, settings.channels, start, settings.warmup, settings.duration, 30.0) if share else None
        for share in split(concurrency, processes.count)
    ]
    client_pids = [p.pid for p in processes._processes]  # empty with one process: the jobs run in this one

    def client_cpu() -> float:
        return sum(cpu_seconds(pid) for pid in client_pids) if client_pids else time.process_time()

    sampler = WindowSampler(server.pid, client_cpu)
    sampler.schedule(start + settings.warmup, start + settings.warmup + settings.duration)
    point = summarize(batch, batch, concurrency, settings.duration, processes.run(jobs))
    window = sampler.result()
    return Row(
        server.name, case.name, batch, concurrency, rnd, point.requests, point.errors, point.requests_per_s, point.rows_per_s,
        point.latency_ms["p50"], point.latency_ms["p99"], per_request_us(window.server_s, point.requests),
        window.cores(window.server_s), window.cores(window.client_s), window.cores(window.other_s), point.first_error,
    )  # fmt: skip


def run(settings: Settings, venv: pathlib.Path, workdir: pathlib.Path) -> dict[str, Any]:
    from tensorwire.client.bench import ClientProcesses

    versions = ensure_venv(venv)
    progress("fitting models ...")
    models = fit_models(settings.svc_rows, settings.svc_features)
    ml_settings = mlserver_settings(settings.mlserver_parallel_workers)
    tw_repo, ml_repo = write_repositories(models, workdir, ml_settings)
    servers: list[Server] = []
    try:
        progress(f"starting tensorwire serve --workers {settings.tensorwire_workers} ...")
        servers.append(start_tensorwire(tw_repo, settings.tensorwire_workers, workdir / "tensorwire.log"))
        progress(f"starting mlserver start (parallel_workers {settings.mlserver_parallel_workers}) ...")
        servers.append(start_mlserver(venv, ml_repo, ml_settings, list(models), workdir / "mlserver.log"))
        agree = check_answers(servers, models)
        progress(f"answers agree with scikit-learn: {agree}")
        prewarm(servers, models, settings.batches)
        smoke = cli_smoke(servers[1], "logistic")
        progress(f"tensorwire bench CLI against MLServer: {smoke}")
        idle_window = idle_cpu(servers, 2.0)
        rows: list[Row] = []
        load_before = load_average()
        with ClientProcesses(settings.processes) as processes:
            for rnd in range(settings.rounds):
                for _, case in models.values():
                    for batch in settings.batches:
                        for conc in settings.concurrency:
                            if conc < case.min_concurrency:
                                continue
                            order = servers if rnd % 2 == 0 else list(reversed(servers))
                            for server in order:
                                progress(f"round {rnd + 1}/{settings.rounds}: {server.name} {case.name} batch {batch} concurrency {conc} ...")
                                row = load_point(processes, server, case, batch, conc, settings, rnd)
                                rows.append(row)
                                progress(
                                    f"    {row.requests_per_s:.0f} req/s, p50 {row.p50_ms} ms, srv {row.server_cpu_us_per_request:.0f} µs/req, "
                                    f"srv cores {row.server_cores:.2f}, other cores {row.other_cores:.2f}"
                                )
        load_after = load_average()
    finally:
        for server in reversed(servers):
            stop_server(server)
    return {
        "benchmark": "bench_mlserver",
        "command": "python benchmarks/bench_mlserver.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_before": load_before, "load_average_after": load_after,
        },
        "versions": {"mlserver_venv": versions, "tensorwire_venv": {"scikit-learn": sklearn_version(), "protobuf": _version("protobuf"), "grpcio": _version("grpcio")}},
        "settings": asdict(settings),
        "servers": {
            "tensorwire": f"tensorwire serve REPO --workers {settings.tensorwire_workers} --metrics-port 0",
            "MLServer": f"mlserver start REPO; settings.json {json.dumps({k: v for k, v in ml_settings.items() if not k.endswith('port')})}; OMP/OPENBLAS/MKL_NUM_THREADS=1",
        },
        "models": {name: asdict(case) for name, (_, case) in models.items()},
        "answers_agree_with_sklearn": agree,
        "idle_server_cores": idle_window,
        "tensorwire_bench_cli_against_mlserver": smoke,
        "rows": [asdict(r) for r in rows],
        "medians": [asdict(r) for r in medians(rows)],
        "ratios": ratios(rows),
    }  # fmt: skip


def idle_cpu(servers: Sequence[Server], seconds: float) -> dict[str, float]:
    """Cores each server burns with no load (polling threads, event loops), over a short idle window."""
    before = {s.name: cpu_seconds(s.pid) for s in servers}
    time.sleep(seconds)
    return {s.name: round((cpu_seconds(s.pid) - before[s.name]) / seconds, 3) for s in servers}


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ---- reporting -----------------------------------------------------------------------------------------

NUMERIC = ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request", "server_cores", "client_cores", "other_cores")


def medians(rows: Sequence[Row]) -> list[Row]:
    groups: dict[tuple[str, str, int, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.batch, row.concurrency, row.server), []).append(row)  # type: ignore[arg-type]
    out = []
    for group in groups.values():
        merged = Row(**{**asdict(group[0]), "round": -1, "requests": sum(r.requests for r in group), "errors": sum(r.errors for r in group)})
        for name in NUMERIC:
            values = [getattr(r, name) for r in group if getattr(r, name) is not None]
            setattr(merged, name, statistics.median(values) if values else None)
        merged.first_error = next((r.first_error for r in group if r.first_error), None)
        out.append(merged)
    return out


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """tensorwire / MLServer per round (back to back), median and range over rounds."""
    by = {(r.server, r.model, r.batch, r.concurrency, r.round): r for r in rows}
    out = []
    for model, batch, conc in dict.fromkeys((r.model, r.batch, r.concurrency) for r in rows):
        pairs: list[tuple[Row, Row]] = []
        for n in sorted({r.round for r in rows}):
            t, m = by.get(("tensorwire", model, batch, conc, n)), by.get(("MLServer", model, batch, conc, n))
            if t is not None and m is not None and t.requests and m.requests:
                pairs.append((t, m))
        if not pairs:
            continue
        rps = [t.requests_per_s / m.requests_per_s for t, m in pairs]
        cpu = [t.server_cpu_us_per_request / m.server_cpu_us_per_request for t, m in pairs]
        p50 = [t.p50_ms / m.p50_ms for t, m in pairs if t.p50_ms and m.p50_ms]
        out.append({"model": model, "batch": batch, "concurrency": conc, "requests_per_s": _summary(rps), "server_cpu_per_request": _summary(cpu), "p50": _summary(p50)})
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


COLUMNS = ["model", "batch", "conc", "server", "req/s", "rows/s", "p50 ms", "p99 ms", "errors", "srv CPU µs/req", "srv cores", "client cores", "other cores"]


def table_cells(report: dict[str, Any]) -> list[list[str]]:
    cells = []
    for r in report["medians"]:
        cells.append([
            r["model"], str(r["batch"]), str(r["concurrency"]), r["server"], _fmt(r["requests_per_s"], ".0f"), _fmt(r["rows_per_s"], ".0f"),
            _fmt(r["p50_ms"], ".2f"), _fmt(r["p99_ms"], ".2f"), str(r["errors"]), _fmt(r["server_cpu_us_per_request"], ".0f"),
            _fmt(r["server_cores"], ".2f"), _fmt(r["client_cores"], ".2f"), _fmt(r["other_cores"], ".2f"),
        ])  # fmt: skip
    return cells


def ratio_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for q in report["ratios"]:
        rps, cpu, p50 = q["requests_per_s"], q["server_cpu_per_request"], q["p50"]
        lines.append(
            f"{q['model']}, batch {q['batch']}, concurrency {q['concurrency']}: req/s {rps['median']:.2f}x [{rps['min']:.2f}..{rps['max']:.2f}], "
            f"server CPU/request {cpu['median']:.2f}x [{cpu['min']:.2f}..{cpu['max']:.2f}], p50 {p50['median']:.2f}x"
        )
    return lines


def header_lines(report: dict[str, Any]) -> list[str]:
    s, m, v = report["settings"], report["machine"], report["versions"]["mlserver_venv"]
    smoke = report["tensorwire_bench_cli_against_mlserver"]
    return [
        f"command: {report['command']}",
        (
            f"machine: {m['cpus']} CPUs, Python {m['python']}, load average before {m['load_average_before']}, "
            f"after {m['load_average_after']}; idle server cores {report['idle_server_cores']}"
        ),
        f"tensorwire: {report['servers']['tensorwire']}",
        f"MLServer {v.get('mlserver')} + mlserver-sklearn {v.get('mlserver-sklearn')} (scikit-learn {v.get('scikit-learn')}, protobuf {v.get('protobuf')}): {report['servers']['MLServer']}",
        "models: " + "; ".join(f"{k} = {c['description']}, outputs {'+'.join(c['outputs'])}" for k, c in report["models"].items()),
        f"answers agree with scikit-learn: {report['answers_agree_with_sklearn']}",
        (
            f"load: tensorwire bench's engine, {s['processes']} client process(es) x {s['channels']} channels, "
            f"{s['duration']:g} s per point after {s['warmup']:g} s warm-up, median of {s['rounds']} round(s), servers alternating"
        ),
        f"tensorwire bench CLI against MLServer (default outputs): exit {smoke['exit']}, {smoke.get('requests_per_s', '-')} req/s, {smoke.get('errors', '-')} errors",
    ]


def format_table(report: dict[str, Any]) -> str:
    cells = table_cells(report)
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    lines = header_lines(report) + ["", "  ".join(h.rjust(w) for h, w in zip(COLUMNS, widths))]
    previous = None
    for c in cells:
        if previous is not None and c[:3] != previous:
            lines.append("")
        previous = c[:3]
        lines.append("  ".join(x.rjust(w) for x, w in zip(c, widths)))
    lines += ["", "tensorwire / MLServer (per round, back to back; median [min..max]):"] + ["  " + line for line in ratio_lines(report)]
    for r in report["medians"]:
        if r["first_error"]:
            lines.append(f"{r['server']} {r['model']} batch {r['batch']} concurrency {r['concurrency']}: first error: {r['first_error']}")
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    lines = ["```text", *header_lines(report), "```", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in table_cells(report):
        lines.append("| " + " | ".join(c) + " |")
    lines += ["", "tensorwire / MLServer (per round, back to back; median [min..max]):", ""] + [f"- {line}" for line in ratio_lines(report)]
    return "\n".join(lines) + "\n"


def parse_counts(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=pathlib.Path, default=DEFAULT_VENV, help=f"MLServer's virtualenv (default {DEFAULT_VENV.relative_to(ROOT)})")
    parser.add_argument("--batch", type=parse_counts, default=(1, 64), help="rows per request (default 1,64)")
    parser.add_argument("--concurrency", type=parse_counts, default=(1, 16), help="requests in flight (default 1,16)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per point (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window (default 2)")
    parser.add_argument("--processes", type=int, default=1, help="load-generator processes (tensorwire bench --processes, default 1)")
    parser.add_argument("--channels", type=int, default=4, help="connections per load-generator process (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, servers alternating; medians reported (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="tensorwire serve --workers (default 2)")
    parser.add_argument("--parallel-workers", type=int, default=2, help="MLServer's parallel_workers (default 2; 0 = inference in the gRPC process)")
    parser.add_argument("--svc-rows", type=int, default=SVC_TRAIN_ROWS, help=f"training rows of the SVC (default {SVC_TRAIN_ROWS})")
    parser.add_argument("--svc-features", type=int, default=SVC_FEATURES, help=f"features of the SVC (default {SVC_FEATURES})")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 s points, 0.5 s warm-up, 1 round, concurrency 4")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress goes to stderr)")
    parser.add_argument("--markdown", type=pathlib.Path, default=None, metavar="FILE", help="also write the table as markdown")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds, args.concurrency = 2.0, 0.5, 1, (4,)
    settings = Settings(
        args.duration, args.warmup, args.processes, args.channels, args.rounds, args.batch, args.concurrency,
        args.workers, args.parallel_workers, args.svc_rows, args.svc_features,
    )  # fmt: skip

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with tempfile.TemporaryDirectory(prefix="tw-mlserver-") as tmp:
            report = run(settings, args.venv.resolve(), pathlib.Path(tmp))
    except SetupError as exc:
        print(f"bench_mlserver: {exc}", file=sys.stderr)
        return INSTALL_FAILED
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    if args.markdown:
        args.markdown.write_text(format_markdown(report))
        progress(f"markdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
