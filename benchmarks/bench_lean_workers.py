"""Issue 16's measuring stick: server memory per worker count and start times, beside MLServer's memory, in one run.

It drives only the command line (`tensorwire serve ...` as a subprocess) and
reads /proc, so it measures any process model the server has.

(1) Memory. A repository of the five benchmark models (bench_protocol_modes.py's
    logistic and rbf SVC, a Ridge, a LinearSVC and an 8-cluster KMeans on the
    same synthetic data) plus a tree model (bench_mlserver.py's
    HistGradientBoostingClassifier, 100 iterations x 4 classes), exported with
    `tensorwire.export(..., dtype="float32")`, served with --workers 1, 2, 4, 8.
    Measured once every listening worker has answered REQUESTS_PER_WORKER
    requests per model (SO_REUSEPORT spreads connections by hash, so the script
    opens channels until each worker holds one). Figures from
    /proc/PID/smaps_rollup of the server's whole process tree: whole-server PSS,
    and per worker RSS, PSS, private (Private_Clean + Private_Dirty) and shared.
    Beside it MLServer 1.7.1 (its own virtualenv, see bench_mlserver.py) with the
    same scikit-learn models as joblib files, parallel_workers 1 and 2.
    Below it, where one worker's private memory goes: by mapping (/proc/PID/smaps)
    and, in a fresh process, step by step (import numpy, grpc, numba, the server,
    load the models, score them).

(2) Start times. A repository with one model of every family in
    server/families/, served with --start-workers workers (default 2, what
    `tensorwire serve` picks on 2 cores): seconds from starting the process to
    the first fresh connection that finds ServerReady and every ModelReady
    true, and until every worker has passed that check on a connection it
    accepted itself (the workers are the processes holding a LISTEN socket on
    the port; /proc/net/tcp and /proc/PID/fd tell which process accepted a
    connection; a new connection per probe lands on a worker chosen by
    SO_REUSEPORT's hash). Cold: NUMBA_CACHE_DIR is a new empty folder; warm:
    the same folder again (its file count is printed after each start).
    Restart: SIGKILL to one worker of a running server (each original worker
    once), seconds until a new process of the server's tree exists, listens on
    the port, and answers ModelInfer, ServerReady and every ModelReady on a
    fresh connection that it, not the surviving worker, accepted.

    python benchmarks/bench_lean_workers.py                      # everything (about 8 minutes on 2 cores)
    python benchmarks/bench_lean_workers.py --skip-cold --skip-mlserver --workers 1,2
    python benchmarks/bench_lean_workers.py --json figures.json  # also write the figures
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import pkgutil
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_mlserver import DEFAULT_VENV, SetupError, ensure_venv, fit_hgb, free_port, mlserver_settings
from bench_protocol_modes import N_FEATURES, SVC_FEATURES, Server, fit_logistic, fit_svc, stop_server, synthetic_data
from bench_skeleton import process_tree, progress, table
from peer_venvs import clean_env

GOAL_TWO_WORKERS_MIB, GOAL_PER_WORKER_MIB = 200.0, 35.0
GOAL_COLD_S, GOAL_WARM_S, GOAL_RESTART_S = 20.0, 1.5, 1.0
REQUESTS_PER_WORKER = 50  # per model, so every worker touches every model's code and data
START_TIMEOUT_S = 600.0  # a cold start with several workers compiling on 2 busy cores
POLL_S = 0.01
PROBE_TIMEOUT_S = 1.0  # a ready worker answers a probe in milliseconds; a connection queued at a worker still loading waits
TCP_LISTEN, TCP_ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp


# ---- models ----------------------------------------------------------------------------------------------


def fit_memory_models() -> dict[str, tuple[Any, int]]:
    """name -> (fitted estimator, input width): the five benchmark models and a tree ensemble."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import Ridge
    from sklearn.svm import LinearSVC

    X, y = synthetic_data()
    target = X @ np.random.default_rng(3).standard_normal(N_FEATURES)
    return {
        "logistic": (fit_logistic(), N_FEATURES),
        "ridge": (Ridge(alpha=1.0).fit(X, target), N_FEATURES),
        "linear_svc": (LinearSVC(C=1.0, random_state=0).fit(X, y), N_FEATURES),
        "svc": (fit_svc(), SVC_FEATURES),
        # float32 centres: MLServer's scikit-learn scores FP32 rows, and KMeans.predict refuses them against float64 centres
        "kmeans": (KMeans(8, n_init=1, random_state=0).fit(X.astype(np.float32)), N_FEATURES),
        "hgb": (fit_hgb(), N_FEATURES),
    }


def family_factories() -> dict[str, Callable[[np.ndarray, np.ndarray], Any]]:
    """One small model per family module of server/families/, fitted on (X, y)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.cluster import DBSCAN, KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC

    return {
        "linear": lambda X, y: LogisticRegression(max_iter=1000).fit(X, y),
        "svm": lambda X, y: SVC(kernel="rbf").fit(X, y),
        "kmeans": lambda X, y: KMeans(8, n_init=1, random_state=0).fit(X),
        "dbscan": lambda X, y: DBSCAN(eps=float(np.sqrt(X.shape[1])), min_samples=5).fit(X),
        "decomposition": lambda X, y: PCA(5).fit(X),
        "trees": lambda X, y: HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0).fit(X, y),
        "calibration": lambda X, y: CalibratedClassifierCV(LinearSVC(random_state=0), cv=3).fit(X, y),
        "neighbors": lambda X, y: KNeighborsClassifier(5).fit(X, y),
        "mlp": lambda X, y: MLPClassifier((32,), max_iter=300, random_state=0).fit(X, y),
    }


def server_families() -> list[str]:
    import tensorwire.server.families as families

    return sorted(m.name for m in pkgutil.iter_modules(families.__path__))


def export_repository(models: dict[str, Any], root: pathlib.Path) -> pathlib.Path:
    import tensorwire

    for name, estimator in models.items():
        tensorwire.export(estimator, root / name / "1", dtype="float32")
    return root


def family_repository(root: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """One model per family; returns the repository and the families that have no model here (a new family)."""
    import warnings

    warnings.filterwarnings("ignore")  # convergence warnings of the small fits
    X, y = synthetic_data()
    factories = family_factories()
    families = server_families()
    models = {family: factories[family](X, y) for family in families if family in factories}
    return export_repository(models, root), [f for f in families if f not in factories]


def write_mlserver_repository(models: dict[str, tuple[Any, int]], root: pathlib.Path, parallel_workers: int) -> dict[str, Any]:
    """root/<name>/{model.joblib, model-settings.json} and root/settings.json; returns the settings."""
    import joblib

    for name, (estimator, width) in models.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, folder / "model.joblib")
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, width]}],
        }, indent=2))  # fmt: skip
    settings = mlserver_settings(parallel_workers)
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    return settings


# ---- /proc: sockets and memory ---------------------------------------------------------------------------


def tcp_sockets(port: int) -> dict[int, tuple[str, int, int]]:
    """inode -> (state, local port, remote port) of every TCP socket in this network namespace with `port` at either end."""
    found = {}
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in pathlib.Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                if port in (local, remote):
                    found[int(fields[9])] = (fields[3], local, remote)
    return found


def socket_inodes(pid: int | str) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def listening_pids(root_pid: int, port: int) -> set[int]:
    """Processes of the server's tree that hold a LISTEN socket on the port: the workers that take connections."""
    listening = {inode for inode, (state, local, _) in tcp_sockets(port).items() if state == TCP_LISTEN and local == port}
    return {pid for pid in process_tree(root_pid) if socket_inodes(pid) & listening}


def accepted_peers(pid: int, port: int) -> set[int]:
    """Remote ports of the connections on `port` that process `pid` has accepted."""
    sockets = tcp_sockets(port)
    return {sockets[i][2] for i in socket_inodes(pid) if i in sockets and sockets[i][0] == TCP_ESTABLISHED and sockets[i][1] == port}


def own_client_ports(port: int) -> set[int]:
    """Local ports of this process's open connections to `port`."""
    sockets = tcp_sockets(port)
    return {sockets[i][1] for i in socket_inodes("self") if i in sockets and sockets[i][0] == TCP_ESTABLISHED and sockets[i][2] == port}


def smaps_rollup(pid: int) -> dict[str, float]:
    """RSS, PSS, private and shared memory of one process in MiB."""
    kib = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        kib[key] = int(rest.split()[0])
    return {
        "rss_mib": kib["Rss"] / 1024,
        "pss_mib": kib["Pss"] / 1024,
        "private_mib": (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024,
        "shared_mib": (kib["Shared_Clean"] + kib["Shared_Dirty"]) / 1024,
    }


def cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def program(command: str) -> str:
    """What a process runs: the module after -m, else the script or executable's name."""
    words = command.split()
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    script = next((w for w in words[1:] if not w.startswith("-")), words[0] if words else "?")
    return "resource tracker" if "resource_tracker" in command else pathlib.Path(script).name


MAPPING_GROUPS = (  # (substring of the mapped file's path, group), first match wins
    ("llvmlite", "llvmlite (LLVM)"), ("numba", "numba"), ("grpc", "grpcio"), ("protobuf", "protobuf"), ("google/_upb", "protobuf"),
    ("numpy", "numpy"), ("scipy", "scipy"), ("sklearn", "scikit-learn"), ("libpython", "python"), ("/bin/python", "python"),
    ("lib-dynload", "python"), (".npz", "model files"), ("tensorwire", "tensorwire"),
)


def mapping_group(path: str) -> str:
    if not path:
        return "anonymous (Python objects, arrays, LLVM/numba JIT state)"
    if path.startswith("["):
        return "[heap] (malloc arena)" if path == "[heap]" else "[stack] and other kernel areas"
    return next((group for key, group in MAPPING_GROUPS if key in path), "other files (libc, libstdc++, ...)")


def private_by_mapping(pid: int) -> dict[str, float]:
    """MiB of private memory (Private_Clean + Private_Dirty) per group of mappings of one process, largest first."""
    groups: dict[str, float] = {}
    group = ""
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if first and "-" in first[0] and ":" not in first[0]:  # a mapping's header: address range, perms, offset, dev, inode, path
            group = mapping_group(first[5].strip() if len(first) > 5 else "")
        elif first and first[0] in ("Private_Clean:", "Private_Dirty:"):
            groups[group] = groups.get(group, 0.0) + int(first[1]) / 1024
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


# ---- servers -------------------------------------------------------------------------------------------


@dataclass
class Started:
    server: Server
    port: int
    workers: int
    started_at: float  # time.monotonic() just before the process was created


def start_tensorwire(repository: pathlib.Path, workers: int, cache: pathlib.Path | None, log_path: pathlib.Path) -> Started:
    """`tensorwire serve` on a free loopback port, metrics off; NUMBA_CACHE_DIR=cache when given (else numba's default)."""
    port = free_port()
    command = [sys.executable, "-m", "tensorwire", "serve", str(repository), "--workers", str(workers), "--host", "127.0.0.1",
               "--grpc-port", str(port), "--metrics-port", str(free_port()), "--grace-period", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"NUMBA_CACHE_DIR": str(cache)} if cache else {})}
    started_at = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Started(Server("tensorwire", process, f"127.0.0.1:{port}", log_path), port, workers, started_at)


@contextlib.contextmanager
def serving(repository: pathlib.Path, workers: int, cache: pathlib.Path | None, log_path: pathlib.Path) -> Iterator[tuple[Started, dict[str, float]]]:
    """A started tensorwire server and its start timings; stopped on leaving."""
    started = start_tensorwire(repository, workers, cache, log_path)
    try:
        yield started, wait_until_serving(started, model_names(repository))
    finally:
        stop_server(started.server)


def model_names(repository: pathlib.Path) -> list[str]:
    return sorted(p.name for p in repository.iterdir() if p.is_dir())


def ready_on_fresh_connection(url: str, models: Sequence[str]) -> bool:
    """ServerReady and every ModelReady true, asked on a new connection (the client's channels never share one)."""
    from tensorwire.client import InferenceClient, InferenceServerError

    try:
        with InferenceClient(url, retry=None, validate_inputs=False) as client:
            return client.server_ready(timeout=2) and all(client.model_ready(m, timeout=2) for m in models)
    except InferenceServerError:
        return False


def wait_until_serving(started: Started, models: Sequence[str]) -> dict[str, float]:
    """Seconds from process start to the first ready answer, and until every worker has answered on a connection it accepted.

    A listening socket alone does not prove a worker ready: grpcio listens when the port is added, and the kernel
    queues connections for a worker that has not started serving yet.
    """
    server, deadline = started.server, started.started_at + START_TIMEOUT_S
    first_ready: float | None = None
    answered: set[int] = set()
    while True:
        listening = listening_pids(server.pid, started.port)
        worker = answering_worker(server.url, started.port, listening, models) if listening else None
        if worker is not None:
            now = time.monotonic() - started.started_at
            first_ready = now if first_ready is None else first_ready
            answered.add(worker)
            if len(answered & listening) >= started.workers:
                return {"first_ready_s": first_ready, "all_ready_s": now}
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"tensorwire --workers {started.workers} did not become ready:\n{server.log_tail()}")
        time.sleep(POLL_S)


def answering_worker(url: str, port: int, candidates: set[int], models: Sequence[str], infer: tuple[str, np.ndarray] | None = None) -> int | None:
    """On a new connection: ServerReady, every ModelReady (and ModelInfer when given) answered and true; returns the
    process of `candidates` that accepted the connection (from /proc), or None."""
    from tensorwire.client import InferenceClient, InferenceServerError

    try:
        with InferenceClient(url, retry=None, validate_inputs=False) as client:
            if infer is not None:
                client.infer(infer[0], infer[1], timeout=PROBE_TIMEOUT_S)
            if not (client.server_ready(timeout=PROBE_TIMEOUT_S) and all(client.model_ready(m, timeout=PROBE_TIMEOUT_S) for m in models)):
                return None
            mine = own_client_ports(port)
            return next((pid for pid in candidates if accepted_peers(pid, port) & mine), None)
    except InferenceServerError:
        return None


def mlserver_unservable(server: Server, models: dict[str, tuple[Any, int]]) -> dict[str, str]:
    """Wait for MLServer; returns the models it cannot serve and why (they are left out of both servers' tables)."""
    from tensorwire.client import InferenceClient, InferenceServerError

    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready_on_fresh_connection(server.url, []):
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise SetupError(f"MLServer did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    failed = {name: "not ready after start" for name in models if not ready_on_fresh_connection(server.url, [name])}
    with InferenceClient(server.url, retry=None, validate_inputs=False) as client:
        for name, (_, width) in models.items():
            if name not in failed:
                try:
                    client.infer(name, np.ones((4, width), dtype=np.float32), timeout=60)
                except InferenceServerError as exc:
                    failed[name] = str(exc)[:160]
    return failed


# ---- requests ----------------------------------------------------------------------------------------------


def touch_every_model(started: Started, widths: dict[str, int], rounds: int = 3) -> int:
    """REQUESTS_PER_WORKER requests per model and worker, on channels opened until every worker has accepted one.

    Returns how many listening workers held a connection of the client (all, unless SO_REUSEPORT's hash was unkind).
    """
    from tensorwire.client import InferenceClient

    workers = listening_pids(started.server.pid, started.port)
    reached: set[int] = set()
    for attempt in range(rounds):
        with InferenceClient(started.server.url, channels=4 * len(workers) * (attempt + 1), validate_inputs=False) as client:
            send_requests(client, widths, REQUESTS_PER_WORKER * len(workers))
            reached = {pid for pid in workers if accepted_peers(pid, started.port) & own_client_ports(started.port)}
        if reached == workers:
            break
    return len(reached)


def send_requests(client: Any, widths: dict[str, int], per_model: int) -> None:
    rng = np.random.default_rng(0)
    for name, width in widths.items():
        X = rng.standard_normal((4, width)).astype(np.float32)
        for _ in range(per_model):
            client.infer(name, X, timeout=60)


def repository_widths(url: str, models: Sequence[str]) -> dict[str, int]:
    from tensorwire.client import InferenceClient

    with InferenceClient(url) as client:
        return {name: int(client.model_metadata(name, timeout=30).inputs[0].shape[-1]) for name in models}


# ---- (1) memory ----------------------------------------------------------------------------------------


@dataclass
class MemoryRow:
    server: str
    workers: int
    pss_mib: float  # the whole tree
    rss_mib: float
    workers_reached: int  # workers that answered the warm-up requests (tensorwire: checked in /proc)
    processes: list[dict[str, Any]] = field(default_factory=list)  # pid, role, command, rss/pss/private/shared MiB

    def of_role(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.processes if p["role"] == role]

    def worker_mean(self, key: str) -> float:
        workers = self.of_role("worker")
        return sum(p[key] for p in workers) / len(workers) if workers else float("nan")


def measure_tree(name: str, root_pid: int, workers: int, worker_pids: set[int], reached: int) -> MemoryRow:
    """Memory of every process of the tree; roles: worker (serves requests), supervisor / main, or what its command says."""
    processes: list[dict[str, Any]] = []
    for pid in process_tree(root_pid):
        with contextlib.suppress(OSError, KeyError):
            command = cmdline(pid)
            role = "worker" if pid in worker_pids else "supervisor" if pid == root_pid else f"other: {program(command)}"
            processes.append({"pid": pid, "role": role, "command": command[:160], **smaps_rollup(pid)})
    pss, rss = sum(float(p["pss_mib"]) for p in processes), sum(float(p["rss_mib"]) for p in processes)
    return MemoryRow(name, workers, pss, rss, reached, processes)


def tensorwire_memory(repository: pathlib.Path, workers: int, cache: pathlib.Path | None, work: pathlib.Path) -> tuple[MemoryRow, dict[str, float]]:
    """Memory of a warmed-up server with `workers` workers, and where worker 0's private memory goes (by mapping)."""
    with serving(repository, workers, cache, work / f"memory-w{workers}.log") as (started, _):
        widths = repository_widths(started.server.url, model_names(repository))
        reached = touch_every_model(started, widths)
        time.sleep(0.5)
        serving_pids = listening_pids(started.server.pid, started.port)
        row = measure_tree("tensorwire", started.server.pid, workers, serving_pids, reached)
        if workers == 1:  # the one process serves: it is the worker
            row.processes[0]["role"] = "worker"
        breakdown = private_by_mapping(min(serving_pids))
    progress(f"tensorwire --workers {workers}: {row.pss_mib:.0f} MiB PSS")
    return row, breakdown


def mlserver_memory(venv: pathlib.Path, models: dict[str, tuple[Any, int]], parallel_workers: int, work: pathlib.Path) -> tuple[MemoryRow, dict[str, str]]:
    """MLServer with parallel_workers inference processes, after the same warm-up; returns the models it could not serve."""
    from tensorwire.client import InferenceClient

    root = work / f"mlserver-p{parallel_workers}"
    settings = write_mlserver_repository(models, root, parallel_workers)
    log_path = work / f"mlserver-p{parallel_workers}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(root)], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=root, env=clean_env(venv))
    server = Server("MLServer", process, f"127.0.0.1:{settings['grpc_port']}", log_path)
    try:
        failed = mlserver_unservable(server, models)
        widths = {name: width for name, (_, width) in models.items() if name not in failed}
        with InferenceClient(server.url, channels=4, validate_inputs=False) as client:
            send_requests(client, widths, REQUESTS_PER_WORKER * max(1, parallel_workers))
        time.sleep(0.5)
        tree = process_tree(server.pid)
        inference = {pid for pid in tree if pid != server.pid and "resource_tracker" not in cmdline(pid)}
        row = measure_tree("MLServer", server.pid, parallel_workers, inference, parallel_workers)
        for p in row.processes:
            p["role"] = {"supervisor": "main (gRPC + REST)"}.get(p["role"], p["role"])
    finally:
        stop_server(server)
    progress(f"MLServer parallel_workers {parallel_workers}: {row.pss_mib:.0f} MiB PSS" + (f"; could not serve {failed}" if failed else ""))
    return row, failed


# ---- where a worker's private memory goes, step by step -----------------------------------------------------

LADDER = r"""
import json, pathlib, sys
def private():
    kib = dict((l.split(":")[0], int(l.split()[1])) for l in pathlib.Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024, kib["Rss"] / 1024
steps = [("python", private())]
import numpy as np
steps.append(("+ import numpy", private()))
import grpc
steps.append(("+ import grpc", private()))
import numba
steps.append(("+ import numba (llvmlite)", private()))
import scipy.special, sklearn.svm, sklearn.ensemble
steps.append(("+ import scipy and scikit-learn (the families' exporters)", private()))
from tensorwire.server.process.app import Server
from tensorwire.server.modeling.registry import load_families
load_families()
steps.append(("+ import the server and its families", private()))
from tensorwire.kernels.config import apply_thread_budget
from tensorwire.server.repository.model_repository import ModelRepository
apply_thread_budget()
repository = ModelRepository(sys.argv[1])
repository.load_all(None)
steps.append(("+ load and warm the models (numba cache warm)", private()))
print(json.dumps(steps))
"""


def private_ladder(repository: pathlib.Path, cache: pathlib.Path | None) -> list[tuple[str, float, float]]:
    """Private and RSS MiB of a fresh process after each step a worker takes (no gRPC server: that part is small)."""
    env = {**os.environ, **({"NUMBA_CACHE_DIR": str(cache)} if cache else {})}
    done = subprocess.run([sys.executable, "-c", LADDER, str(repository)], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        progress(f"the step-by-step memory probe failed (left out):\n{done.stderr[-2000:]}")
        return []
    return [(step, private, rss) for step, (private, rss) in json.loads(done.stdout.strip().splitlines()[-1])]


# ---- (2) start times --------------------------------------------------------------------------------------


def start_time(repository: pathlib.Path, workers: int, cache: pathlib.Path | None, log_path: pathlib.Path) -> dict[str, float]:
    """Start timings, and the files in NUMBA_CACHE_DIR once the server stopped (a warm start should add none)."""
    with serving(repository, workers, cache, log_path) as (_, timings):
        pass
    return {**timings, "cache_files_after": float(count_files(cache)) if cache else float("nan")}


def count_files(folder: pathlib.Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def restart_times(repository: pathlib.Path, workers: int, cache: pathlib.Path | None, work: pathlib.Path) -> list[dict[str, float]]:
    """Kill each original worker once (SIGKILL), one after the other, timing until a new one serves on its own."""
    models = model_names(repository)
    results = []
    with serving(repository, workers, cache, work / "restart.log") as (started, _):
        payload = infer_payload(started.server.url, models[0])
        originals = sorted(listening_pids(started.server.pid, started.port))
        for victim in originals[: min(2, len(originals))]:
            results.append(time_one_restart(started, victim, payload, models))
            progress(f"worker restart: {results[-1]}")
    return results


def infer_payload(url: str, model: str) -> tuple[str, np.ndarray]:
    width = repository_widths(url, [model])[model]
    return model, np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)


def time_one_restart(started: Started, victim: int, payload: tuple[str, np.ndarray], models: Sequence[str]) -> dict[str, float]:
    """Phases after the kill: a new process exists in the tree; it listens on the port; it answered a request itself."""
    root, port = started.server.pid, started.port
    before = set(process_tree(root))
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    spawned = listening = None
    while time.monotonic() - killed_at < START_TIMEOUT_S:
        newcomers = set(process_tree(root)) - before
        spawned = spawned or (time.monotonic() if newcomers else None)
        serving_new = listening_pids(root, port) & newcomers
        listening = listening or (time.monotonic() if serving_new else None)
        if serving_new and answering_worker(started.server.url, port, serving_new, models, payload) is not None:
            answered = time.monotonic()
            assert spawned is not None and listening is not None
            return {"new_process_s": spawned - killed_at, "listening_s": listening - killed_at, "answered_s": answered - killed_at}
        time.sleep(POLL_S)
    raise RuntimeError(f"no new worker answered within {START_TIMEOUT_S:.0f} s of killing pid {victim}:\n{started.server.log_tail()}")


# ---- report ------------------------------------------------------------------------------------------------


def added_per_worker(rows: Sequence[MemoryRow]) -> list[tuple[int, int, float]]:
    """(from, to, MiB of whole-server PSS per added worker) between consecutive worker counts."""
    ordered = sorted(rows, key=lambda r: r.workers)
    return [(a.workers, b.workers, (b.pss_mib - a.pss_mib) / (b.workers - a.workers)) for a, b in zip(ordered, ordered[1:])]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def memory_lines(rows: Sequence[MemoryRow], mlserver: Sequence[MemoryRow], left_out: dict[str, str], models: str) -> list[str]:
    cells = []
    for r in [*rows, *mlserver]:
        main = r.of_role("supervisor") + r.of_role("main (gRPC + REST)")
        others = [p for p in r.processes if p["role"] not in ("worker", "supervisor", "main (gRPC + REST)")]
        cells.append([r.server, str(r.workers), str(len(r.processes)), f"{r.pss_mib:.0f}", f"{r.rss_mib:.0f}",
                      f"{sum(p['pss_mib'] for p in main):.0f}" if main else "-", f"{r.worker_mean('rss_mib'):.0f}",
                      f"{r.worker_mean('pss_mib'):.0f}", f"{r.worker_mean('private_mib'):.0f}", f"{r.worker_mean('shared_mib'):.0f}",
                      f"{sum(p['pss_mib'] for p in others):.0f}", f"{r.workers_reached}/{r.workers}"])
    lines = [f"(1) memory, MiB, after {REQUESTS_PER_WORKER} requests per model and worker; models: {models}"
             + (f"; left out, MLServer cannot serve them: {left_out}" if left_out else ""),
             "    whole = PSS summed over the server's process tree; per worker = mean over the processes that serve requests",
             "    (tensorwire: those listening on the port; MLServer: its parallel inference workers, beside its main process)",
             table(["server", "workers", "processes", "whole PSS", "whole RSS", "supervisor/main PSS", "worker RSS", "worker PSS",
                    "worker private", "worker shared", "other PSS", "workers warmed"], cells)]
    lines.append("processes, PSS/RSS/private MiB each:")
    lines += [f"  {r.server} {r.workers}: " + ", ".join(f"{p['role']} {p['pss_mib']:.0f}/{p['rss_mib']:.0f}/{p['private_mib']:.0f}" for p in r.processes)
              for r in [*rows, *mlserver]]
    by_count = {r.workers: r for r in rows}
    if 2 in by_count:
        lines.append(f"goal: 2 workers <= {GOAL_TWO_WORKERS_MIB:.0f} MiB PSS: {by_count[2].pss_mib:.0f} MiB, "
                     f"{verdict(by_count[2].pss_mib <= GOAL_TWO_WORKERS_MIB)}")
    steps = added_per_worker(rows)
    judged = [s for s in steps if s[0] >= 2]  # 1 -> 2 also adds the supervisor
    if steps:
        lines.append(f"goal: each added worker <= {GOAL_PER_WORKER_MIB:.0f} MiB PSS: "
                     + ", ".join(f"{a}->{b}: {mib:+.0f} MiB/worker" for a, b, mib in steps)
                     + (f" -> {verdict(all(mib <= GOAL_PER_WORKER_MIB for *_, mib in judged))} (judged from 2 workers up; "
                        "1->2 adds the supervisor too)" if judged else ""))
    return lines


def breakdown_lines(breakdown: dict[str, float], ladder: Sequence[tuple[str, float, float]], workers: int) -> list[str]:
    lines = []
    if breakdown:
        lines += [f"\nwhere worker 0's private memory goes (--workers {workers}, by mapping, /proc/PID/smaps), MiB",
                  table(["mapping", "private MiB"], [[k, f"{v:.1f}"] for k, v in breakdown.items() if v >= 0.05])]
    if ladder:
        rows, previous = [], 0.0
        for step, private, rss in ladder:
            rows.append([step, f"{private:.1f}", f"{private - previous:+.1f}", f"{rss:.1f}"])
            previous = private
        lines += ["\na fresh process taking a worker's steps (memory-table models, warm numba cache, no gRPC server), MiB",
                  table(["step", "private", "added private", "RSS"], rows)]
    return lines


def start_lines(starts: dict[str, dict[str, float]], restarts: Sequence[dict[str, float]], workers: int, families: Sequence[str],
                missing: Sequence[str]) -> list[str]:
    lines = [f"\n(2) start, seconds, --workers {workers}, one model per family: {', '.join(families)}"
             + (f" (families with no model here: {', '.join(missing)})" if missing else "")]
    cells = [[kind, f"{t['first_ready_s']:.2f}", f"{t['all_ready_s']:.2f}", "-" if t["cache_files_after"] != t["cache_files_after"] else f"{t['cache_files_after']:.0f}"] for kind, t in starts.items()]
    lines.append(table(["start", "first ready (ServerReady + every ModelReady)", f"all {workers} workers answered", "cache files after"], cells))
    goals = {"cold (empty NUMBA_CACHE_DIR)": GOAL_COLD_S, "warm (the cache the cold start wrote)": GOAL_WARM_S}
    for kind, goal in goals.items():
        if kind in starts:
            lines.append(f"goal: {kind.split()[0]} start <= {goal:g} s: {starts[kind]['all_ready_s']:.2f} s, "
                         f"{verdict(starts[kind]['all_ready_s'] <= goal)}")
    if restarts:
        lines.append(f"\nworker restart after SIGKILL (--workers {workers}), seconds from the kill")
        lines.append(table(["kill", "new process", "it listens", "it answered ModelInfer on a fresh connection"],
                           [[str(i + 1), f"{r['new_process_s']:.2f}", f"{r['listening_s']:.2f}", f"{r['answered_s']:.2f}"]
                            for i, r in enumerate(restarts)]))
        worst = max(r["answered_s"] for r in restarts)
        lines.append(f"goal: restart <= {GOAL_RESTART_S:g} s: worst {worst:.2f} s, {verdict(worst <= GOAL_RESTART_S)}")
    return lines


def environment() -> dict[str, Any]:
    import grpc
    import numba
    import sklearn

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
            "grpcio": grpc.__version__, "scikit-learn": sklearn.__version__, "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


# ---- main --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    workers: tuple[int, ...]
    start_workers: int
    mlserver: bool
    cold: bool
    venv: pathlib.Path
    json_path: pathlib.Path | None


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts of the memory table (default 1,2,4,8)")
    parser.add_argument("--start-workers", type=int, default=2, help="workers of the start and restart measurements (default 2)")
    parser.add_argument("--skip-mlserver", action="store_true", help="leave out MLServer's memory")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold start (numba's default cache is used instead of a new one)")
    parser.add_argument("--venv", type=pathlib.Path, default=DEFAULT_VENV, help="MLServer's virtualenv (see bench_mlserver.py)")
    parser.add_argument("--json", type=pathlib.Path, default=None, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    workers = tuple(sorted({int(x) for x in args.workers.split(",") if x.strip()}))
    if not workers or min(workers) < 1 or args.start_workers < 2:
        parser.error("--workers takes counts >= 1; --start-workers must be >= 2 (the restart kills a worker)")
    return Settings(workers, args.start_workers, not args.skip_mlserver, not args.skip_cold, args.venv.resolve(), args.json)


def run(settings: Settings, work: pathlib.Path) -> dict[str, Any]:
    # a cold start needs a cache nobody filled; otherwise numba's default cache, filled by an unreported start
    env = environment()
    cache = work / "numba-cache" if settings.cold else None
    families_repo, missing = family_repository(work / "families")
    progress(f"families: {model_names(families_repo)}; starting --workers {settings.start_workers} ...")
    starts: dict[str, dict[str, float]] = {}
    if settings.cold:
        starts["cold (empty NUMBA_CACHE_DIR)"] = start_time(families_repo, settings.start_workers, cache, work / "cold.log")
        progress(f"cold start: {starts}")
    else:
        start_time(families_repo, settings.start_workers, cache, work / "fill.log")
    starts["warm (the cache the cold start wrote)" if settings.cold else "warm (numba's default cache)"] = start_time(
        families_repo, settings.start_workers, cache, work / "warm.log")
    progress(f"starts: {starts}")
    restarts = restart_times(families_repo, settings.start_workers, cache, work)

    models = fit_memory_models()
    left_out: dict[str, str] = {}
    mlserver_rows: list[MemoryRow] = []
    if settings.mlserver:
        try:
            progress(f"MLServer: {ensure_venv(settings.venv)}")
            for parallel_workers in (1, 2):
                row, failed = mlserver_memory(settings.venv, {k: v for k, v in models.items() if k not in left_out}, parallel_workers, work)
                left_out.update(failed)
                mlserver_rows.append(row)
        except SetupError as exc:
            progress(f"MLServer left out: {exc}")
    memory_repo = export_repository({k: est for k, (est, _) in models.items() if k not in left_out}, work / "memory")
    start_time(memory_repo, 1, cache, work / "memory-fill.log")  # compile what the memory models need before measuring
    rows, breakdowns = [], {}
    for workers in settings.workers:
        row, breakdown = tensorwire_memory(memory_repo, workers, cache, work)
        rows.append(row)
        breakdowns[workers] = breakdown
    ladder = private_ladder(memory_repo, cache)
    return {
        "command": "python benchmarks/bench_lean_workers.py " + shlex.join(sys.argv[1:]),
        "environment": env,
        "memory_models": {name: type(est).__name__ for name, (est, _) in models.items() if name not in left_out},
        "left_out_mlserver_cannot_serve": left_out,
        "memory": [asdict(r) for r in rows],
        "mlserver_memory": [asdict(r) for r in mlserver_rows],
        "added_pss_per_worker": [{"from": a, "to": b, "mib_per_worker": mib} for a, b, mib in added_per_worker(rows)],
        "worker_private_by_mapping": breakdowns,
        "private_ladder": [{"step": s, "private_mib": p, "rss_mib": r} for s, p, r in ladder],
        "start_workers": settings.start_workers,
        "start_families": model_names(families_repo),
        "families_without_model": missing,
        "starts": starts,
        "restarts": restarts,
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "goals": {"two_workers_pss_mib": GOAL_TWO_WORKERS_MIB, "added_worker_pss_mib": GOAL_PER_WORKER_MIB,
                  "cold_s": GOAL_COLD_S, "warm_s": GOAL_WARM_S, "restart_s": GOAL_RESTART_S},
    }


def print_report(report: dict[str, Any]) -> None:
    rows = [MemoryRow(**r) for r in report["memory"]]
    mlserver = [MemoryRow(**r) for r in report["mlserver_memory"]]
    models = ", ".join(f"{k} ({v})" for k, v in report["memory_models"].items())
    lines = [f"command: {report['command']}", "environment: " + ", ".join(f"{k} {v}" for k, v in report["environment"].items())
             + f", load_average_at_end {report['load_average_at_end']}", ""]
    lines += memory_lines(rows, mlserver, report["left_out_mlserver_cannot_serve"], models)
    shown = 2 if 2 in report["worker_private_by_mapping"] else max(report["worker_private_by_mapping"], default=0)
    lines += breakdown_lines(report["worker_private_by_mapping"].get(shown, {}), [tuple(s.values()) for s in report["private_ladder"]], shown)
    lines += start_lines(report["starts"], report["restarts"], report["start_workers"], report["start_families"], report["families_without_model"])
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the blocks that stop the servers

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with tempfile.TemporaryDirectory(prefix="tw-lean-workers-") as tmp:
            report = run(settings, pathlib.Path(tmp))
    except SetupError as exc:
        print(f"bench_lean_workers: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if settings.json_path:
        settings.json_path.write_text(json.dumps(report, indent=2))
        progress(f"figures written to {settings.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
