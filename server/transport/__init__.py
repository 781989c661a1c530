"""gRPC transport: the two engines, the RPC table and error mapping, health, auth and TLS, per-worker call limits."""
