"""Channel settings shared by the sync and async clients: options, keep-alive, TLS, the bearer token.

Each of a client's channels gets its own subchannel pool, hence its own TCP
connection: the server's worker processes share one port (SO_REUSEPORT) and
the kernel hands each connection to one worker, so several connections are
what spreads one client's load over several workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ChannelOptions = list[tuple[str, Any]]
PemSource = bytes | str | os.PathLike[str]


@dataclass(frozen=True, kw_only=True)
class KeepAlive:
    """HTTP/2 keep-alive pings, which find dead connections behind idle load balancers.

    The server must allow pings this frequent, or it closes the connection
    (GOAWAY "too_many_pings"); gRPC servers allow one every 5 minutes unless
    configured otherwise, so keep `time_s` at or above what the server permits.
    """

    time_s: float = 60.0
    timeout_s: float = 20.0
    permit_without_calls: bool = False

    def options(self) -> ChannelOptions:
        return [
            ("grpc.keepalive_time_ms", int(self.time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


def channel_options(
    index: int, *, max_message_bytes: int, keepalive: KeepAlive | None, extra: Sequence[tuple[str, Any]]
) -> ChannelOptions:
    """Options for the `index`-th channel of a client: a local subchannel pool and a distinct argument
    keep it from sharing a connection with the client's other channels."""
    options: ChannelOptions = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.use_local_subchannel_pool", 1),
        ("tensorwire.channel_index", index),
    ]
    if keepalive is not None:
        options += keepalive.options()
    return options + list(extra)


def _read_pem(source: PemSource | None, what: str) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if source is None or isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {os.fspath(source)!r}: {exc.strerror}") from None


def ssl_credentials(
    *, root_certificates: PemSource | None, private_key: PemSource | None, certificate_chain: PemSource | None
) -> grpc.ChannelCredentials:
    """TLS credentials; `None` roots mean the system's trust store. Paths are read now, so errors show at construction."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client certificate needs both private_key and certificate_chain")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(root_certificates, "root certificates"),
        private_key=_read_pem(private_key, "private key"),
        certificate_chain=_read_pem(certificate_chain, "certificate chain"),
    )


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Metadata sent with every call: the bearer token, when there is one.

    Plain metadata rather than gRPC call credentials, which refuse insecure
    channels: a token over plaintext is readable on the wire, so use TLS beyond
    loopback.
    """
    if token is None:
        return ()
    if not token or any(c in token for c in "\r\n"):
        raise ValueError("token must be a non-empty string without line breaks")
    return (("authorization", f"Bearer {token}"),)
