"""The client's exceptions: one family, each carrying the gRPC status code and the server's message.

    InferenceServerError            any failed call (code, details); a stream result's error has code UNKNOWN,
    │                               since the protocol carries stream errors as text only
    ├── ModelNotFoundError          NOT_FOUND
    ├── InvalidInputError           INVALID_ARGUMENT (also raised before sending, for arrays that cannot be
    │                               encoded or that disagree with the model's metadata)
    ├── ServerUnavailableError      UNAVAILABLE, DEADLINE_EXCEEDED
    ├── ResourceExhaustedError      RESOURCE_EXHAUSTED
    └── AuthenticationError         UNAUTHENTICATED, PERMISSION_DENIED

Calls on a closed client raise RuntimeError; bad constructor settings raise ValueError.
"""

from __future__ import annotations

import grpc


class InferenceServerError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"[{code.name}] {details}")
        self.code = code
        self.details = details


class ModelNotFoundError(InferenceServerError):
    pass


class InvalidInputError(InferenceServerError):
    pass


class ServerUnavailableError(InferenceServerError):
    pass


class ResourceExhaustedError(InferenceServerError):
    pass


class AuthenticationError(InferenceServerError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[InferenceServerError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServerUnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}


def from_status(code: grpc.StatusCode, details: str) -> InferenceServerError:
    return _BY_CODE.get(code, InferenceServerError)(code, details)


def from_rpc_error(error: grpc.RpcError) -> InferenceServerError:
    return from_status(error.code(), error.details() or "")  # type: ignore[attr-defined]
