"""Bearer tokens and the start-up check of the security files, without grpc: the supervisor runs the check in the
process the operator launched, and must not import grpc for it (see security.py for the rules the tokens follow)."""

from __future__ import annotations

import hmac
import logging
import os
import pathlib
import threading
from dataclasses import dataclass

from tensorwire.server.config import TlsFiles

log = logging.getLogger(__name__)

SCOPES = ("infer", "admin")
TOKENS_ENV = "TENSORWIRE_AUTH_TOKENS"
RELOAD_SECONDS = 1.0


class TokenFileError(ValueError):
    """The token file cannot be read or holds a line that is not `<scope> <token>`."""


def parse_tokens(text: str, source: str) -> dict[str, str]:
    """token -> scope, from the lines of a token file. Errors name the line, never the token."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SCOPES:
            hint = " (a '#' starts a comment only at the start of a line)" if "#" in line else ""
            raise TokenFileError(f"{source} line {number}: expected '<scope> <token>' with scope one of {', '.join(SCOPES)}{hint}")
        tokens[parts[1]] = parts[0]
    if not tokens:
        raise TokenFileError(f"{source}: no tokens")
    return tokens


def parse_env_tokens(text: str) -> dict[str, str]:
    """token -> scope, from TENSORWIRE_AUTH_TOKENS, where `;` also ends an entry (one line is easier to set)."""
    return parse_tokens(text.replace(";", "\n"), TOKENS_ENV)


@dataclass
class TokenStore:
    """The current tokens; follows the file when it changes (a bad new file keeps the old tokens)."""

    path: pathlib.Path | None
    tokens: dict[str, str]
    _stamp: tuple[int, int] = (0, 0)

    @classmethod
    def load(cls, path: str | None) -> TokenStore:
        if path:
            file = pathlib.Path(path)
            store = cls(file, parse_tokens(_read(file), str(file)), _stamp_of(file))
            threading.Thread(target=store._follow, name="auth-token-reloader", daemon=True).start()
            return store
        text = os.environ.get(TOKENS_ENV)
        if not text:
            raise TokenFileError(f"give --auth-tokens FILE or set {TOKENS_ENV}")
        return cls(None, parse_env_tokens(text))

    def scope_of(self, token: str) -> str | None:
        """The token's scope, comparing against every known token in constant time."""
        found = None
        for known, scope in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = scope
        return found

    def _follow(self) -> None:
        assert self.path is not None
        while True:
            threading.Event().wait(RELOAD_SECONDS)
            stamp = _stamp_of(self.path)
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                self.tokens = parse_tokens(_read(self.path), str(self.path))
                log.info("auth tokens reloaded from %s (%d tokens)", self.path, len(self.tokens))
            except TokenFileError as exc:
                log.error("auth tokens not reloaded, keeping the previous ones: %s", exc)


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot be read ({exc.strerror})") from None


def _stamp_of(path: pathlib.Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def check_security_files(tls: TlsFiles | None, auth_tokens: str | None) -> None:
    """Fail at start-up, in the process the operator launched, on unreadable certificates or tokens."""
    if tls is not None:
        tls.credentials()
    if auth_tokens is not None:
        if auth_tokens:
            parse_tokens(_read(pathlib.Path(auth_tokens)), auth_tokens)
        else:
            parse_env_tokens(os.environ.get(TOKENS_ENV, ""))
