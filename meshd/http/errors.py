"""Errors as the gateway answers them: the Connect protocol's JSON error form.

``{"code": "not_found", "message": "..."}`` with the HTTP status Connect maps
the gRPC code to, so a gRPC error reads the same over HTTP, and Connect clients
understand it.
"""

from __future__ import annotations

import json

import grpc

# gRPC code -> HTTP status (connectrpc.com/docs/protocol, "Error Codes").
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def code_name(code: grpc.StatusCode) -> str:
    """Connect's name of a code: invalid_argument."""
    return str(code.name).lower()


class GatewayError(Exception):
    """A call refused or failed: its gRPC code, message and HTTP status."""

    def __init__(self, code: grpc.StatusCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else HTTP_STATUS.get(code, 500)

    def body(self) -> bytes:
        return json.dumps({"code": code_name(self.code), "message": self.message}).encode()


def invalid(message: str, status: int = 400) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, status)
