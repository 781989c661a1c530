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

from collections.abc import Sequence

import grpc

MAX_NAME_CHARS = 80  # a name from a request, echoed in an error, is cut to this
MAX_NAMES_LISTED = 3
MAX_MESSAGE_CHARS = 2000  # gRPC sends details in a header: a client refuses headers past its limit (8-16 KiB)


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


def shown(name: str) -> str:
    """A name from a request, quoted and cut with an ellipsis, for an error message."""
    if len(name) <= MAX_NAME_CHARS:
        return f"'{name}'"
    return f"'{name[:MAX_NAME_CHARS]}…' ({len(name)} characters)"


def listed(names: Sequence[str]) -> str:
    """A count and the first few names, for an error message: `3 ('a', 'b', 'c')`, `5000 ('a', 'b', 'c', …)`."""
    first = ", ".join(shown(name) for name in names[:MAX_NAMES_LISTED])
    more = ", …" if len(names) > MAX_NAMES_LISTED else ""
    return f"{len(names)} ({first}{more})"


def bounded(message: str) -> str:
    """A message cut to MAX_MESSAGE_CHARS, its start and end kept: the last defence of a status's size."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    keep = (MAX_MESSAGE_CHARS - 40) // 2  # room for the marker between the halves
    return f"{message[:keep]} … [{len(message) - 2 * keep} characters cut] … {message[-keep:]}"
