"""The request path, transport-agnostic: the protocol handler, request plans, dynamic batching, statistics."""
