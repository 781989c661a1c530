"""`tensorwire bench` (run as `python -m tensorwire.client.bench`) against the real server: short sweeps, parsed output.

Each run is a subprocess, as a user runs it; the figures are not checked, only that they are there and consistent.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

SHORT = ["--duration", "0.4s", "--warmup", "0.1s", "--quiet"]


def bench(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tensorwire.client.bench", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_unary_sweep_as_json(server) -> None:  # type: ignore[no-untyped-def]
    result = bench("--url", server.url, "--model", "flowers", "--batch", "1,4", "--concurrency", "1,3", "--processes", "1", "--json", *SHORT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["model"], report["mode"]) == ("flowers", "unary")
    assert report["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 6]}]
    assert [(p["batch"], p["concurrency"]) for p in report["points"]] == [(1, 1), (1, 3), (4, 1), (4, 3)]
    for point in report["points"]:
        assert point["requests"] > 0 and point["errors"] == 0 and point["first_error"] is None
        assert point["rows_per_s"] == pytest.approx(point["requests_per_s"] * point["batch"], rel=1e-3)
        latency = point["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_streaming_over_two_client_processes_as_csv(server) -> None:  # type: ignore[no-untyped-def]
    result = bench("--url", server.url, "--model", "ridge", "--stream", "--batch", "2", "--concurrency", "3", "--processes", "2", "--csv", *SHORT)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1
    assert (rows[0]["batch"], rows[0]["concurrency"], rows[0]["errors"]) == ("2", "3", "0")
    assert int(rows[0]["requests"]) > 0 and float(rows[0]["p99_ms"]) > 0


def test_errors_are_counted_and_reported(server) -> None:  # type: ignore[no-untyped-def]
    # FP64 inputs for an FP32 model: every request fails, in the stream's messages
    result = bench("--url", server.url, "--model", "binary", "--datatype", "FP64", "--stream", "--concurrency", "1", "--processes", "1", *SHORT)
    assert result.returncode == 1
    assert "errors" in result.stdout and "expected FP32" in result.stdout


def test_setup_problems_are_one_line_and_exit_2(server) -> None:  # type: ignore[no-untyped-def]
    result = bench("--url", server.url, "--model", "no-such-model", *SHORT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tensorwire bench: cannot read model 'no-such-model' metadata from " + server.url + ": [NOT_FOUND] unknown model 'no-such-model' (models: binary, broken, flowers, ols, ridge, svm)"
    ]
    assert bench("--url", server.url, "--model", "ridge", "--duration", "soon").returncode == 2  # argparse's usage error


def test_plot_without_matplotlib_says_so_before_sending_anything(server) -> None:  # type: ignore[no-untyped-def]
    hide_matplotlib = "import sys; sys.modules['matplotlib'] = None; from tensorwire.client.bench import main; sys.exit(main())"
    result = bench("--url", server.url, "--model", "ridge", "--plot", "out.png", *SHORT, code=hide_matplotlib)
    assert result.returncode == 2
    assert "--plot needs matplotlib" in result.stderr


def test_plot_is_written_when_matplotlib_is_there(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    out = tmp_path / "curve.png"
    result = bench("--url", server.url, "--model", "ridge", "--concurrency", "1,2", "--processes", "1", "--plot", str(out), *SHORT)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "requests/s" in result.stdout  # the table is printed too
