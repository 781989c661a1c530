"""Bearer-token authentication for the gRPC port: which scope each method needs, and the interceptors that refuse
calls (the token store and the file checks are in tokens.py).

Tokens live in a file, one `<scope> <token>` per line. A line whose first non-blank
character is `#` is a comment; any other `#`, and every `;`, is part of the token.
TENSORWIRE_AUTH_TOKENS holds the same lines, separated by newlines or `;`.
Scopes: `infer` (inference, metadata, statistics, reflection) and `admin`
(all of that, plus repository load and unload). A call sends exactly one
`authorization: Bearer <token>` (the scheme in any case, RFC 6750); two
`authorization` values are refused. Health and liveness stay open:
Kubernetes probes send no headers. Tokens are compared in constant time and
never written to a message or a log line. The file is re-read when it changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tensorwire.server.transport.tokens import TokenStore

OPEN_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",  # without a token it lists only the server's own services (server/transport/health.py)
    }
)
ADMIN_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }
)


def required_scope(method: str) -> str | None:
    if method in OPEN_METHODS:
        return None
    return "admin" if method in ADMIN_METHODS else "infer"


def refusal_of(store: TokenStore, details: grpc.HandlerCallDetails) -> tuple[grpc.StatusCode, str] | None:
    """Why a call may not go on, from its `authorization: Bearer <token>` and the method's scope; None if it may."""
    needed = required_scope(details.method)
    if needed is None:
        return None
    values = authorization_values(details.invocation_metadata)
    if len(values) > 1:
        # which one a proxy or a server picks differs: refuse rather than guess
        return grpc.StatusCode.UNAUTHENTICATED, f"{len(values)} 'authorization' metadata values; send exactly one 'Bearer <token>'"
    token = bearer_token(values[0]) if values else ""
    if not token:
        return grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata"
    scope = store.scope_of(token)
    if scope is None:
        return grpc.StatusCode.UNAUTHENTICATED, "unknown token"
    if needed == "admin" and scope != "admin":
        return grpc.StatusCode.PERMISSION_DENIED, f"{details.method} needs the admin scope"
    return None


def authorization_values(metadata: Any) -> list[Any]:
    """Every `authorization` value a call sent (more than one is refused: which one a proxy picks differs)."""
    return [value for key, value in metadata or () if key == "authorization"]


def caller_scope(store: TokenStore, metadata: Any) -> str | None:
    """The scope of the one bearer token a call sent; None without exactly one known token."""
    values = authorization_values(metadata)
    return store.scope_of(bearer_token(values[0])) if len(values) == 1 else None


def bearer_token(value: str | bytes) -> str:
    """The token of a `Bearer <token>` value, the scheme matched in any case (RFC 6750); "" if it is not one."""
    if not isinstance(value, str):
        return ""
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token against the method's scope before any handler runs (grpc.aio engine)."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        refused = refusal_of(self._store, details)
        if refused is None:
            return await continuation(details)
        code, text = refused

        async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(code, text)

        return _shaped_like(await continuation(details), abort)


class SyncAuthInterceptor(grpc.ServerInterceptor):
    """AuthInterceptor for grpcio's thread-pool server (sync engine)."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        refused = refusal_of(self._store, details)
        if refused is None:
            return continuation(details)
        code, text = refused

        def abort(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(code, text)

        return _shaped_like(continuation(details), abort)


def _shaped_like(handler: grpc.RpcMethodHandler | None, abort: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler of the same shape as the real one that only aborts."""
    if handler is None or not handler.request_streaming and not handler.response_streaming:
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)
