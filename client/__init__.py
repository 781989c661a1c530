"""The tensorwire client SDK: numpy arrays in, numpy arrays out, over gRPC."""

from tensorwire.client.client import InferenceClient
from tensorwire.client.errors import (
    AuthenticationError,
    InferenceServerError,
    InvalidInputError,
    ModelNotFoundError,
    ResourceExhaustedError,
    ServerUnavailableError,
)

__all__ = [
    "AuthenticationError",
    "InferenceClient",
    "InferenceServerError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ResourceExhaustedError",
    "ServerUnavailableError",
]
