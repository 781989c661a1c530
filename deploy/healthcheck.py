"""Container health check: is the server's grpc.health.v1 service SERVING? Exit 0 if so, 1 if not.

    python healthcheck.py [--address HOST:PORT] [--service NAME] [--timeout SECONDS]

It asks exactly what Kubernetes' native gRPC probes ask (Health/Check, service ""
for the whole server, or a model's name), so Docker's HEALTHCHECK and the
cluster agree. The address defaults to 127.0.0.1 on $TENSORWIRE_GRPC_PORT (8001),
the port the server itself reads. Shipped in the image, not in the package.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=f"127.0.0.1:{os.environ.get('TENSORWIRE_GRPC_PORT', '8001')}", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help='health service: "" for the server (default) or a model name')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    where = f"{args.address} service {args.service!r}"
    try:
        with grpc.insecure_channel(args.address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"unhealthy: {where}: {error.code().name} {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {where}: {status}", file=sys.stderr)
        return 1
    print(f"healthy: {where}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
