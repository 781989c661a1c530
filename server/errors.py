"""The server's error taxonomy: each domain error knows its gRPC status code.

    TensorwireError                  (INTERNAL)
    ├── ModelNotFoundError           NOT_FOUND: no such model or version
    ├── ModelNotReadyError           UNAVAILABLE: known, but failed to load or is loading
    ├── UnavailableError             UNAVAILABLE: the server cannot do this now (or in this mode)
    ├── InvalidRequestError          INVALID_ARGUMENT: the request disagrees with the model
    ├── DeadlineExceededError        DEADLINE_EXCEEDED: the caller's deadline passed before scoring
    └── UnsupportedError             UNIMPLEMENTED: an RPC or feature not served (yet)

The servicer maps them to statuses in one place; messages name the model, the
tensor and what was expected versus received.
"""

from __future__ import annotations

import grpc


class TensorwireError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class ModelNotFoundError(TensorwireError):
    code = grpc.StatusCode.NOT_FOUND


class ModelNotReadyError(TensorwireError):
    code = grpc.StatusCode.UNAVAILABLE


class UnavailableError(TensorwireError):
    code = grpc.StatusCode.UNAVAILABLE


class InvalidRequestError(TensorwireError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(TensorwireError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnsupportedError(TensorwireError):
    code = grpc.StatusCode.UNIMPLEMENTED


def undecodable(message_type: str) -> InvalidRequestError:
    """The error for request bytes that protobuf cannot parse as `message_type`."""
    return InvalidRequestError(f"the request bytes are not a valid {message_type} message")
