"""grpc.health.v1.Health for both engines: Check, Watch and List, with watches capped and model names kept private.

Probes need no token, so the server-wide services ("" and the inference
service) answer anyone; a model's own status, which tells whether a model of
that name exists, needs a token when tokens are configured. Open watches are
capped per worker (they would otherwise hold gRPC's concurrency for ever).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from tensorwire.server.transport.call_limits import CallSlots
from tensorwire.server.transport.security import caller_scope
from tensorwire.server.transport.tokens import TokenStore

SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthAccess:
    """What a health caller may see, and how many watches a worker holds open."""

    def __init__(self, public_services: Iterable[str], tokens: TokenStore | None, max_watches: int) -> None:
        self._public = frozenset(public_services)
        self._tokens = tokens
        self.watches = CallSlots(max_watches)

    def may_see(self, service: str, context: Any) -> bool:
        if self._tokens is None or service in self._public:
            return True
        return caller_scope(self._tokens, context.invocation_metadata()) is not None

    def hidden_message(self) -> str:
        return "the health of a model needs 'authorization: Bearer <token>'; without one, ask for service \"\" (the server)"

    def watches_full_message(self) -> str:
        return f"this worker has {self.watches.limit} health watches open (--max-health-watches); use Check, or retry later"

    def listing(self, statuses: Mapping[str, int], context: Any) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items() if self.may_see(name, context)}
        )


class SyncHealthServicer(health.HealthServicer):
    """grpc_health's servicer for grpcio's thread-pool server (whose Watch holds no thread), behind HealthAccess."""

    def __init__(self, access: HealthAccess) -> None:
        super().__init__()
        self._access = access

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        if not self._access.may_see(request.service, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, self._access.hidden_message())
        return super().Check(request, context)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        access = self._access
        if not access.may_see(request.service, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, access.hidden_message())
        if not access.watches.take():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, access.watches_full_message())
        if not context.add_callback(access.watches.give_back):
            access.watches.give_back()  # the call already ended
        return super().Watch(request, context, send_response_callback)

    def List(self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext) -> health_pb2.HealthListResponse:
        with self._lock:
            statuses = dict(self._server_status)
        return self._access.listing(statuses, context)


class AioHealthServicer(health.aio.HealthServicer):
    """grpc_health's servicer for grpc.aio, behind HealthAccess; runs on the event loop."""

    def __init__(self, access: HealthAccess) -> None:
        super().__init__()
        self._access = access

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        if not self._access.may_see(request.service, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, self._access.hidden_message())
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        access = self._access
        if not access.may_see(request.service, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, access.hidden_message())
        if not access.watches.take():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, access.watches_full_message())
        try:
            await super().Watch(request, context)
        finally:
            access.watches.give_back()

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        return self._access.listing(dict(self._server_status), context)
