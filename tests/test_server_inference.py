"""A real `tensorwire serve` subprocess answers like scikit-learn, through our client."""

from __future__ import annotations

import numpy as np
import pytest

from tensorwire.client import InferenceClient

TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-9, atol=1e-12)}
SKLEARN_METHODS = ("predict", "predict_proba", "decision_function")


def expected_outputs(estimator, X: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {m: getattr(estimator, m)(X) for m in SKLEARN_METHODS if hasattr(estimator, m)}


def assert_matches(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    if want.dtype.kind in "USO":
        np.testing.assert_array_equal(got.astype(str), want.astype(str))
    elif want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", ["flowers", "binary", "svm", "ridge", "ols"])
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_every_output_matches_scikit_learn(client: InferenceClient, fitted_models, name: str, rows: int) -> None:  # type: ignore[no-untyped-def]
    fitted = fitted_models[name]
    X = fitted.X[:rows].astype(fitted.dtype)
    got = client.infer(name, X)
    want = expected_outputs(fitted.estimator, X)
    assert set(got) == set(want)
    for output, array in want.items():
        assert got[output].shape == array.shape, output
        assert_matches(got[output], array, fitted.dtype)


def test_requested_outputs_only(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    X = fitted_models["binary"].X[:5].astype(np.float32)
    got = client.infer("binary", X, outputs=["predict_proba"])
    assert list(got) == ["predict_proba"]


def test_explicit_version_and_request_id(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    X = fitted_models["ridge"].X[:2]
    assert client.infer("ridge", X, version="1")["predict"].shape == (2,)


def test_string_labels_come_back_as_bytes(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    labels = client.infer("flowers", fitted_models["flowers"].X[:4].astype(np.float32), outputs=["predict"])["predict"]
    assert {type(label) for label in labels} == {bytes}


def test_health_and_metadata(client: InferenceClient) -> None:
    assert client.server_live() and client.server_ready()
    assert client.model_ready("flowers")
    assert not client.model_ready("broken")
    assert not client.model_ready("no-such-model")
    metadata = client.model_metadata("flowers")
    assert metadata.inputs[0].name == "input" and list(metadata.inputs[0].shape) == [-1, 6]
    assert metadata.inputs[0].datatype == "FP32"
    assert {o.name for o in metadata.outputs} == {"predict", "predict_proba", "decision_function", "contributions"}
    assert client.server_metadata().name == "tensorwire"


def test_repository_index_reports_the_corrupt_model_with_its_reason(client: InferenceClient) -> None:
    index = {(m.name, m.version): m for m in client.repository_index().models}
    assert index[("flowers", "1")].state == "READY"
    broken = index[("broken", "1")]
    assert broken.state == "UNAVAILABLE"
    assert "model.npz" in broken.reason and "cannot be read" in broken.reason


def test_statistics_count_what_was_served(client: InferenceClient, fitted_models) -> None:  # type: ignore[no-untyped-def]
    before = client.model_statistics("ols").model_stats
    count_before = before[0].inference_count if before else 0
    client.infer("ols", fitted_models["ols"].X[:10].astype(np.float32))
    after = client.model_statistics("ols").model_stats[0]
    assert after.inference_count == count_before + 10
    assert after.inference_stats.compute_infer.count >= 1


def test_typed_contents_are_accepted(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    import grpc

    from tensorwire.protos import inference_pb2 as pb
    from tensorwire.protos.codec import to_typed_contents

    X = fitted_models["ridge"].X[:3]
    request = pb.ModelInferRequest(model_name="ridge")
    request.inputs.add(name="input", datatype="FP64", shape=X.shape, contents=to_typed_contents(X))
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        response = call(request, timeout=10)
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f8")
    np.testing.assert_allclose(got, fitted_models["ridge"].estimator.predict(X), rtol=1e-9, atol=1e-12)


def test_stream_infer_answers_each_request_and_survives_errors(server, fitted_models) -> None:  # type: ignore[no-untyped-def]
    import grpc

    from tensorwire.client._requests import build_infer_request
    from tensorwire.protos import inference_pb2 as pb

    X = fitted_models["ols"].X[:2].astype(np.float32)
    requests = [
        build_infer_request("ols", X, request_id="a"),
        build_infer_request("no-such-model", X, request_id="b"),
        build_infer_request("ols", X, request_id="c"),
    ]
    with grpc.insecure_channel(server.url) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        responses = list(call(iter(requests), timeout=10))
    assert [r.infer_response.id for r in responses] == ["a", "b", "c"]
    assert [bool(r.error_message) for r in responses] == [False, True, False]
    assert "no-such-model" in responses[1].error_message


@pytest.mark.parametrize("name", ["flowers", "binary", "svm", "ridge"])
def test_repeated_requests_with_new_numbers_match_scikit_learn(client: InferenceClient, fitted_models, name: str) -> None:  # type: ignore[no-untyped-def]
    """The same envelope again and again: from the second request on, the server answers from its request plan."""
    fitted = fitted_models[name]
    rng = np.random.default_rng(11)
    for _ in range(12):
        X = (fitted.X[rng.integers(0, len(fitted.X), 5)] + rng.normal(scale=0.1, size=(5, fitted.X.shape[1]))).astype(fitted.dtype)
        got = client.infer(name, X)
        for output, array in expected_outputs(fitted.estimator, X).items():
            assert_matches(got[output], array, fitted.dtype)
