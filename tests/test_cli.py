"""The `tensorwire` command line: export refuses pickles unless trusted; serve explains bad arguments."""

from __future__ import annotations

import subprocess
import sys

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from tensorwire.server.repository.model_format import load_model


def tensorwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensorwire", *args], capture_output=True, text=True, timeout=120)


def test_export_refuses_a_pickle_without_trust(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    joblib.dump(LogisticRegression().fit(rng.standard_normal((40, 3)), rng.integers(0, 2, 40)), tmp_path / "m.joblib")
    result = tensorwire("export", str(tmp_path / "m.joblib"), str(tmp_path / "out" / "1"))
    assert result.returncode == 1
    assert "--trust-pickle" in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_with_trust_writes_a_loadable_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    joblib.dump(LogisticRegression().fit(rng.standard_normal((40, 3)), rng.integers(0, 2, 40)), tmp_path / "m.joblib")
    result = tensorwire("export", str(tmp_path / "m.joblib"), str(tmp_path / "out" / "1"), "--trust-pickle", "--dtype", "float64")
    assert result.returncode == 0, result.stderr
    stored = load_model(tmp_path / "out" / "1" / "model.npz")
    assert stored.manifest.input_datatype == "FP64"


def test_serve_explains_a_missing_repository(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = tensorwire("serve", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr


def test_warm_refuses_a_missing_or_empty_repository_and_names_a_broken_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert tensorwire("warm", str(tmp_path / "nowhere")).returncode == 2
    (tmp_path / "empty").mkdir()
    result = tensorwire("warm", str(tmp_path / "empty"))
    assert result.returncode == 1 and "no model loaded" in result.stderr
    (tmp_path / "models" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "1" / "model.npz").write_bytes(b"not a model")
    result = tensorwire("warm", str(tmp_path / "models"))
    assert result.returncode == 1 and "broken version 1" in result.stderr


def test_serve_explains_a_bad_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = tensorwire("serve", str(tmp_path), "--grpc-port", "70000")
    assert result.returncode == 1
    assert "not a TCP port" in result.stderr


def test_serve_refuses_a_port_in_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = tensorwire("serve", str(tmp_path), "--host", "127.0.0.1", "--grpc-port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_engine_auto_is_sync_with_a_worker_per_cpu_and_aio_below(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from tensorwire.server.config import ServerConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert [ServerConfig(model_repository=".", workers=n).resolved_engine() for n in (1, 3, 4, 8)] == ["aio", "aio", "sync", "sync"]
    assert ServerConfig(model_repository=".", workers=8, engine="aio").resolved_engine() == "aio"
    assert ServerConfig(model_repository=".", workers=1, engine="sync").resolved_engine() == "sync"


def test_serve_refuses_an_unknown_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = tensorwire("serve", str(tmp_path), "--engine", "twisted")
    assert result.returncode == 2
    assert "--engine" in result.stderr and "invalid choice" in result.stderr


def test_each_engine_says_it_serves(start_tensorwire, model_repository) -> None:  # type: ignore[no-untyped-def]
    from tensorwire.client import InferenceClient

    for engine in ("aio", "sync"):
        server = start_tensorwire(model_repository, "--workers", "1", "--engine", engine)
        assert f"{engine} engine" in server.log()
        with InferenceClient(server.url) as client:
            assert client.infer("ols", np.ones((3, 6), np.float32))["predict"].shape == (3,)


def test_building_the_command_line_imports_neither_numpy_nor_grpc() -> None:
    """The serving supervisor parses the command line too, and would carry numpy for nothing."""
    for args in (["--help"], ["serve", "--help"]):  # `bench` is the client's own command line, parsed by tensorwire.client
        probe = f"import sys, contextlib, io\nfrom tensorwire.cli import main\nwith contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main({args!r})\nprint(sorted({{'numpy', 'grpc'}} & set(sys.modules)))"
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "[]", result.stdout + result.stderr
