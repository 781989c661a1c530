"""A few seconds of headless Locust against real servers: every scenario runs, and no call fails."""

from __future__ import annotations

import csv
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest

# Checked without importing it: importing locust monkey-patches the whole process for gevent.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed (the [loadtest] extra)")

LOCUSTFILE = pathlib.Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"


def locust(host: str, csv_prefix: pathlib.Path, *args: str) -> dict[tuple[str, str], dict[str, str]]:
    """Run Locust headless; its per-request statistics from the CSV, by (type, name)."""
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--run-time", "3s", "--exit-code-on-error", "1", "--only-summary", "--csv", str(csv_prefix), *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=csv_prefix.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with open(f"{csv_prefix}_stats.csv", newline="") as file:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(file) if row["Type"]}


def wait_until_every_connection_serves(url: str, model: str) -> None:
    """Each Locust user opens its own connection, which may land on any worker process: wait until all serve."""
    from tensorwire.client import InferenceClient

    deadline = time.monotonic() + 60
    with InferenceClient(url, channels=8) as client:
        while not all(client.model_ready(model, timeout=10) for _ in range(8)):
            assert time.monotonic() < deadline, f"model '{model}' never became ready on every connection"
            time.sleep(0.1)


def test_default_scenarios_discover_the_models_and_send_valid_requests(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stats = locust(server.url, tmp_path / "run", "--users", "5", "--spawn-rate", "5")
    assert all(row["Failure Count"] == "0" for row in stats.values())
    by_type: dict[str, set[str]] = {}
    for kind, name in stats:
        by_type.setdefault(kind, set()).add(name)
    assert by_type["RepositoryIndex"] == {"discovery"}
    assert by_type["ModelMetadata"] == {"binary", "flowers", "ols", "ridge", "svm"}  # 'broken' is not ready
    assert {"[1]", "[256]"} <= {name.split(" ", 1)[1] for name in by_type["ModelInfer"]}
    assert by_type["ModelStreamInfer"]
    assert "RepositoryModelLoad" not in by_type  # only when asked for


def test_options_narrow_the_load_and_reload_under_load_runs_when_named(start_tensorwire, fitted_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tensorwire

    repository = tmp_path / "models"
    for name in ("ridge", "binary"):
        tensorwire.export(fitted_models[name].estimator, repository / name / "1", dtype=fitted_models[name].dtype)
    running = start_tensorwire(repository, "--model-control-mode", "explicit", "--load-model", "*")
    wait_until_every_connection_serves(running.url, "ridge")
    stats = locust(
        f"grpc://{running.url}", tmp_path / "reload", "--users", "3", "--spawn-rate", "3",
        "--tw-models", "ridge", "--tw-batch", "3", "--tw-reload-every", "0.5",
        "UnarySmallBatch", "ReloadUnderLoad",
    )  # fmt: skip
    assert set(stats) == {("ModelMetadata", "ridge"), ("ModelInfer", "ridge [3]"), ("RepositoryModelLoad", "ridge")}
    assert all(row["Failure Count"] == "0" for row in stats.values())
    assert int(stats[("RepositoryModelLoad", "ridge")]["Request Count"]) >= 1
