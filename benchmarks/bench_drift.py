"""What drift counting costs the server per request: drift on vs off, A/B, in one run; and what counting the output adds.

The same multinomial LogisticRegression (bench_skeleton.py's, 20 features) is exported three times with its
training rows as `background`, so every file holds a reference profile: `drift_on` counts inputs and the main
output (its class), `drift_inputs` is the file rewritten as before output profiles (inputs only), and `drift_off`'s
config.json says {"drift": {"enabled": false}}. Requests are batch 1 on the request-plan path (no id, repeated
envelope; the linear scorer writes the whole response in one kernel call, and the output is read from it).

(a) The request path in this process, without gRPC: InferenceHandler.model_infer_bytes on the serialised
    request, the three models interleaved; median over repeats of the mean µs per request. On minus inputs-only
    is what counting the output adds per request.
(b) The output counter alone (DriftMonitor.count with and without the output), batch 1 and 64, for the three
    kinds of main output: integer class labels, string class labels (mapped to their index first) and regression
    scores (a Ridge's score bins).
(c) The server: one `tensorwire serve --workers 1` serving drift_on and drift_off, driven by bench_skeleton.py's
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

MODELS = {"drift_on": True, "drift_off": False}  # served under load in (c)
IN_PROCESS = ("drift_on", "drift_inputs", "drift_off")
GOAL_EXTRA = 0.03


def training_background() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_TRAIN, N_FEATURES))  # fit_models' training rows


def export_all(root: pathlib.Path) -> None:
    import tensorwire

    estimator = fit_models()["logistic"]
    background = training_background()
    for name in IN_PROCESS:
        tensorwire.export(estimator, root / name / "1", dtype="float32", background=background)
        (root / name / "config.json").write_text(json.dumps({"drift": {"enabled": name != "drift_off"}}))
    without_output_profile(root / "drift_inputs" / "1")


def without_output_profile(version_dir: pathlib.Path) -> None:
    """Rewrite a model file as it was written before output profiles: the features' profile only."""
    from tensorwire.server.modeling.reference_profile import OUTPUT_ARRAY_NAMES, PARAMS_KEY
    from tensorwire.server.repository.model_format import load_model, save_model

    stored = load_model(version_dir / "model.npz")
    arrays = {name: a for name, a in stored.arrays.items() if name not in OUTPUT_ARRAY_NAMES}
    manifest = stored.manifest
    params = {**manifest.params, PARAMS_KEY: {k: v for k, v in manifest.params[PARAMS_KEY].items() if k != "output"}}
    (version_dir / "model.npz").unlink()
    save_model(version_dir, replace(manifest, arrays={n: a for n, a in manifest.arrays.items() if n in arrays}, params=params), arrays)


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
    on, inputs_only = repository.get("drift_on").drift, repository.get("drift_inputs").drift
    assert on is not None and on.output is not None and inputs_only is not None and inputs_only.output is None
    assert repository.get("drift_off").drift is None
    calls = {}
    for name in IN_PROCESS:
        data = request_bytes(name)
        handler.model_infer_bytes(data)  # learns the request plan
        plan = handler.plan_of(data)
        assert plan is not None and plan.writer is not None, "the request must take the request-plan path, scored by the writer"
        assert (plan.output_at >= 0) == (name == "drift_on"), "only drift_on counts the output"
        calls[name] = timeit.Timer(lambda data=data: handler.model_infer_bytes(data))
    number = 2000 if settings.repeats > 5 else 500
    samples: dict[str, list[float]] = {name: [] for name in IN_PROCESS}
    for _ in range(settings.repeats):
        for name, timer in calls.items():
            samples[name].append(timer.timeit(number) / number * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def output_counter(settings: Settings) -> dict[str, dict[int, float]]:
    """µs DriftMonitor.count adds per call when given the main output, by kind of output and batch size (medians)."""
    from tensorwire.server.inference.drift import DriftMonitor
    from tensorwire.server.modeling.reference_profile import profile_output, profile_rows

    rng = np.random.default_rng(3)
    background = training_background()
    profile = profile_rows(background, None, "FP32")
    labels = np.array([b"bronze", b"gold", b"silver"], dtype=object)
    kinds = {
        "integer labels": (profile_output(rng.integers(0, 3, N_TRAIN), "predict", "INT64", [0, 1, 2]), lambda n: rng.integers(0, 3, n)),
        "string labels": (profile_output(labels[rng.integers(0, 3, N_TRAIN)], "predict", "BYTES", ["bronze", "gold", "silver"]), lambda n: labels[rng.integers(0, 3, n)]),
        "scores": (profile_output(rng.standard_normal(N_TRAIN).astype(np.float32), "predict", "FP32", None), lambda n: rng.standard_normal(n).astype(np.float32)),
    }
    number = 20_000 if settings.repeats > 5 else 2000
    added: dict[str, dict[int, float]] = {}
    for kind, (output, draw) in kinds.items():
        monitor = DriftMonitor(replace(profile, output=output), 10**9, np.dtype(np.float32))  # a window that never rolls
        added[kind] = {}
        for batch in (1, 64):
            X, y = request_array(batch, seed=4), draw(batch)
            with_output = timeit.Timer(lambda: monitor.count(X, y))
            inputs_only = timeit.Timer(lambda: monitor.count(X))
            extra = [(with_output.timeit(number) - inputs_only.timeit(number)) / number * 1e6 for _ in range(settings.repeats)]
            added[kind][batch] = statistics.median(extra)
    return added


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
        export_all(root)
        handler_us = in_process(root, settings)
        counter_us = output_counter(settings)
        server_us = over_grpc(root, settings, stack)
    result: dict[str, Any] = {
        "request_path_us": handler_us,
        "request_path_extra": handler_us["drift_on"] / handler_us["drift_off"] - 1,
        "output_added_us": handler_us["drift_on"] - handler_us["drift_inputs"],
        "output_counter_added_us": counter_us,
        "server_cpu_us_per_request": server_us,
        "server_cpu_extra": server_us["drift_on"] / server_us["drift_off"] - 1,
        "goal_extra": GOAL_EXTRA,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("batch 1, request-plan path, drift on (inputs and output) vs off (same run)")
    print(f"  request path in process (no gRPC): {handler_us['drift_on']:.2f} vs {handler_us['drift_off']:.2f} µs/request "
          f"-> {result['request_path_extra']:+.1%}")
    print(f"  of which the output: {result['output_added_us']:+.2f} µs/request (inputs only: {handler_us['drift_inputs']:.2f} µs/request)")
    print("output counting alone, µs added per request (DriftMonitor.count with vs without the output)")
    for kind, by_batch in counter_us.items():
        print(f"  {kind:<15} " + "  ".join(f"batch {batch}: {us:5.2f}" for batch, us in by_batch.items()))
    print(f"  server CPU under gRPC load:        {server_us['drift_on']:.1f} vs {server_us['drift_off']:.1f} µs/request "
          f"-> {result['server_cpu_extra']:+.1%} (goal: at most {GOAL_EXTRA:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
