"""The tensorwire client SDK: numpy arrays in, numpy arrays out, over gRPC (sync, asyncio and streaming)."""

from tensorwire.client._requests import InferRequest, StreamResult
from tensorwire.client._retry import RetryPolicy
from tensorwire.client.channels import KeepAlive
from tensorwire.client.client import AsyncInferenceClient, InferenceClient
from tensorwire.client.errors import (
    AuthenticationError,
    InferenceServerError,
    InvalidInputError,
    ModelNotFoundError,
    ResourceExhaustedError,
    ServerUnavailableError,
)

__all__ = [
    "AsyncInferenceClient",
    "AuthenticationError",
    "InferRequest",
    "InferenceClient",
    "InferenceServerError",
    "InvalidInputError",
    "KeepAlive",
    "ModelNotFoundError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServerUnavailableError",
    "StreamResult",
]
