"""Who may call the gateway: the TCP API's rules, and a browser's.

* A loopback listener serves reads to anyone on this machine, like the Unix
  socket does, and writes only with the API token (``Authorization: Bearer``),
  unless the operator opted out (``http.writes_without_token``).
* Any other listener is TLS only (meshd/config.py refuses it without), and
  every API call needs the token, exactly like the TCP gRPC listener.
* Browsers: a page of another origin may not call (403) unless listed in
  ``http.cors_origins``; on loopback the Host header must be this machine
  (an IP literal or localhost), which stops DNS rebinding from turning a web
  page into a local client.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from meshd.http.errors import GatewayError

TOKEN_HINT = ("the token from meshd's api.token file, as 'Authorization: Bearer <token>' "
              "(never in the URL)")


def _host_of(header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1'; '[::1]:80' -> '::1'."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Access:
    token: str
    loopback: bool
    scheme: str  # http or https
    writes_without_token: bool = False
    cors_origins: Sequence[str] = ()

    def check_browser(self, headers: Mapping[str, str]) -> None:
        """Host and Origin checks (before anything else, static files included)."""
        host = headers.get("host", "")
        if self.loopback and not _is_ip_or_localhost(_host_of(host)):
            raise GatewayError(grpc.StatusCode.PERMISSION_DENIED,
                               f"Host {host!r} is not this machine: the loopback gateway "
                               "answers requests for an IP address or localhost only", 403)
        origin = headers.get("origin")
        if origin is not None and origin != f"{self.scheme}://{host}" \
                and origin not in self.cors_origins:
            raise GatewayError(grpc.StatusCode.PERMISSION_DENIED,
                               f"pages of {origin} may not call this node (http.cors_origins)",
                               403)

    def check_call(self, read: bool, headers: Mapping[str, str]) -> None:
        """The token, where this call needs it."""
        if self.loopback and (read or self.writes_without_token):
            return
        given = headers.get("authorization", "")
        if not given:
            what = "every call" if not self.loopback else "calls that change anything"
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED,
                               f"{what} need {TOKEN_HINT}", 401)
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED,
                               f"wrong API token: use {TOKEN_HINT}", 401)
