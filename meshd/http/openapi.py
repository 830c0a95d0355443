"""The OpenAPI document of the gateway, generated from the method table.

Schemas follow protobuf's canonical JSON mapping (what the gateway parses and
answers): lowerCamelCase names, 64-bit integers as decimal strings, bytes as
base64, enums by name, Timestamp and Duration as strings. Messages refuse
unknown fields (``additionalProperties: false``), as the gateway does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from meshcore.version import __version__
from meshd.http.methods import Method

F = FieldDescriptor
INT64 = (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64)
UINT64 = (F.TYPE_UINT64, F.TYPE_FIXED64)
INT32 = (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)
UINT32 = (F.TYPE_UINT32, F.TYPE_FIXED32)
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
}
ERROR = {"type": "object", "required": ["code", "message"],
         "properties": {"code": {"type": "string", "example": "invalid_argument"},
                        "message": {"type": "string"}}}


def document(methods: Mapping[str, Method]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR}
    paths = {path: _operations(method, schemas) for path, method in methods.items()}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Mesh node API: the REST/JSON gateway", "version": __version__,
                 "description": "Every gRPC method of meshd, as JSON over HTTP (docs/http.md)."
                                " Reads need no token on a loopback listener; every other "
                                "call needs 'Authorization: Bearer <api.token>'."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
    }


def _ref(descriptor: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    name = descriptor.full_name
    if name in WELL_KNOWN:
        return dict(WELL_KNOWN[name])
    if name not in schemas:
        schemas[name] = {}  # placeholder first: recursive messages
        schemas[name] = _message(descriptor, schemas)
    return {"$ref": f"#/components/schemas/{name}"}


def _message(descriptor: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    properties = {field.json_name: _field(field, schemas) for field in descriptor.fields}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _scalar(value, schemas)}
    schema = _scalar(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _scalar(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        assert field.message_type is not None
        return _ref(field.message_type, schemas)
    if kind == F.TYPE_ENUM:
        assert field.enum_type is not None
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if kind in INT64:
        return {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
    if kind in UINT64:
        return {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
    if kind in INT32:
        return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
    if kind in UINT32:
        return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return {"type": "number"}
    if kind == F.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == F.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    return {"type": "string"}


def _operations(method: Method, schemas: dict[str, Any]) -> dict[str, Any]:
    request = _ref(method.request.DESCRIPTOR, schemas)
    response = _ref(method.response.DESCRIPTOR, schemas)
    answer = ({"text/event-stream": {"schema": {"type": "string"}}} if method.streaming
              else {"application/json": {"schema": response}})
    service = method.service.rsplit(".", 1)[-1]
    common = {
        "tags": [service],
        "summary": f"{service}.{method.name}" + (" (Server-Sent Events)"
                                                  if method.streaming else ""),
        "responses": {"200": {"description": "the response message" + (
            f"s, one per event, each a {method.response.DESCRIPTOR.full_name}"
            if method.streaming else ""), "content": answer},
            "default": {"description": "an error",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}}}},
        "security": [{}, {"token": []}] if method.read else [{"token": []}],
    }
    operations: dict[str, Any] = {"post": {
        **common, "operationId": f"{service}.{method.name}",
        "requestBody": {"required": False,
                        "content": {"application/json": {"schema": request}}}}}
    if method.read:
        operations["get"] = {
            **common, "operationId": f"{service}.{method.name}.get",
            "parameters": [{"name": "message", "in": "query", "required": False,
                            "description": "the request as JSON",
                            "content": {"application/json": {"schema": request}}}]}
    return operations
