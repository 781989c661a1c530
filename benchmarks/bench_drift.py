"""What input drift counting costs the server per request: drift on vs off, A/B, in one run.

The same multinomial LogisticRegression (bench_skeleton.py's, 20 features) is exported twice with its
training rows as `background`, so both files hold a reference profile; one model's config.json says
{"drift": {"enabled": false}}. Requests are batch 1 on the request-plan path (no id, repeated envelope).

(a) The request path in this process, without gRPC: InferenceHandler.model_infer_bytes on the serialised
    request, drift on and off interleaved; median over repeats of the mean µs per request.
(b) The server: one `tensorwire serve --workers 1` serving both models, driven by bench_skeleton.py's
    closed-loop load generator, on and off alternating for `rounds`; the server's CPU µs per request from /proc.

Goal (issue 15): drift on costs at most 3% more server CPU per request than drift off.

    python benchmarks/bench_drift.py            # about a minute
    python benchmarks/bench_drift.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import timeit
from dataclasses import replace
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_skeleton import (  # the sibling script's model, load generator and /proc helpers
    N_FEATURES,
    N_TRAIN,
    Settings,
    check_response,
    fit_models,
    progress,
    request_array,
    run_load,
    start_server,
    stop_server,
)

MODELS = {"drift_on": True, "drift_off": False}
GOAL_EXTRA = 0.03


def export_both(root: pathlib.Path) -> None:
    import tensorwire

    estimator = fit_models()["logistic"]
    background = np.random.default_rng(0).standard_normal((N_TRAIN, N_FEATURES))  # fit_models' training rows
    for name, enabled in MODELS.items():
        tensorwire.export(estimator, root / name / "1", dtype="float32", background=background)
        (root / name / "config.json").write_text(json.dumps({"drift": {"enabled": enabled}}))


def request_bytes(model: str) -> bytes:
    from tensorwire.client._requests import build_infer_request  # as bench_skeleton.py builds its requests

    return bytes(build_infer_request(model, np.array(request_array(1, seed=2))).SerializeToString())


def in_process(root: pathlib.Path, settings: Settings) -> dict[str, float]:
    """µs per request through the handler, drift on and off, repeats interleaved so that load drifts equally."""
    from tensorwire.server.inference.handler import InferenceHandler
    from tensorwire.server.repository.model_repository import ModelRepository

    repository = ModelRepository(root)
    repository.load_all()
    handler = InferenceHandler(repository)
    assert repository.get("drift_on").drift is not None and repository.get("drift_off").drift is None
    calls = {}
    for name in MODELS:
        data = request_bytes(name)
        handler.model_infer_bytes(data)  # learns the request plan
        assert handler.plan_of(data) is not None, "the request must take the request-plan path"
        calls[name] = timeit.Timer(lambda data=data: handler.model_infer_bytes(data))
    number = 2000 if settings.repeats > 5 else 500
    samples: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(settings.repeats):
        for name, timer in calls.items():
            samples[name].append(timer.timeit(number) / number * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def over_grpc(root: pathlib.Path, settings: Settings, stack: contextlib.ExitStack) -> dict[str, float]:
    """Server CPU µs per request under load, drift on and off alternating, medians over rounds."""
    command = [sys.executable, "-m", "tensorwire", "serve", str(root), "--host", "127.0.0.1",
               "--grpc-port", "0", "--metrics-port", "0", "--workers", "1", "--grace-period", "1"]
    server = start_server("tensorwire", command, root.parent / "server.log")
    stack.callback(stop_server, server)
    cpu: dict[str, list[float]] = {name: [] for name in MODELS}
    for round_ in range(settings.rounds):
        for name in MODELS:
            payload = request_bytes(name)
            check_response(server.url, payload, 1)
            row = run_load(replace(server, name=name), payload, 1, settings)
            progress(f"round {round_ + 1} {name}: {row.requests_per_s:.0f} req/s, {row.server_cpu_us_per_request:.1f} µs server CPU/request, "
                     f"{row.other_cores:.2f} other cores busy")
            cpu[name].append(row.server_cpu_us_per_request)
    return {name: statistics.median(values) for name, values in cpu.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for smoke testing")
    parser.add_argument("--rounds", type=int, default=None, help="load runs per model, alternating (default 5; --quick 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    settings = Settings(
        duration=2.0 if args.quick else 5.0, warmup=0.5 if args.quick else 1.0, processes=2, concurrency=16,
        rounds=args.rounds or (1 if args.quick else 5), repeat_target_s=0.0, repeats=5 if args.quick else 21,
    )
    with tempfile.TemporaryDirectory(prefix="tensorwire-bench-drift-") as tmp, contextlib.ExitStack() as stack:
        root = pathlib.Path(tmp) / "models"
        export_both(root)
        handler_us = in_process(root, settings)
        server_us = over_grpc(root, settings, stack)
    result: dict[str, Any] = {
        "request_path_us": handler_us,
        "request_path_extra": handler_us["drift_on"] / handler_us["drift_off"] - 1,
        "server_cpu_us_per_request": server_us,
        "server_cpu_extra": server_us["drift_on"] / server_us["drift_off"] - 1,
        "goal_extra": GOAL_EXTRA,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("batch 1, request-plan path, drift on vs off (same run)")
    print(f"  request path in process (no gRPC): {handler_us['drift_on']:.2f} vs {handler_us['drift_off']:.2f} µs/request "
          f"-> {result['request_path_extra']:+.1%}")
    print(f"  server CPU under gRPC load:        {server_us['drift_on']:.1f} vs {server_us['drift_off']:.1f} µs/request "
          f"-> {result['server_cpu_extra']:+.1%} (goal: at most {GOAL_EXTRA:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
