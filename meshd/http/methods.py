"""The gateway's method table, read off the descriptors of proto/.

A method is a read when proto/ marks it ``idempotency_level = NO_SIDE_EFFECTS``;
every other method mutates, and needs the API token (meshd/http/access.py).
Adding an RPC to proto/ adds it here; forgetting the option makes it a write,
the safe side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message


@dataclass(frozen=True)
class Method:
    service: str  # full name: mesh.node.v1.NodeService
    name: str  # GetStatus
    request: type[Message]
    response: type[Message]
    streaming: bool  # a server stream: Server-Sent Events
    read: bool  # no side effects: served without the token on loopback, and on GET
    handler: Callable[..., Any]  # the servicer's method: (request, context)

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def is_read(method: MethodDescriptor) -> bool:
    options = method.GetOptions()
    return bool(options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS)


def method_table(services: Mapping[ServiceDescriptor, object]) -> dict[str, Method]:
    """Path -> method, for every method of every service, bound to its servicer."""
    table = {}
    for service, servicer in services.items():
        for descriptor in service.methods:
            if descriptor.client_streaming:
                raise ValueError(f"{descriptor.full_name}: client streams have no HTTP form")
            method = Method(
                service=service.full_name, name=descriptor.name,
                request=message_factory.GetMessageClass(descriptor.input_type),
                response=message_factory.GetMessageClass(descriptor.output_type),
                streaming=descriptor.server_streaming, read=is_read(descriptor),
                handler=getattr(servicer, descriptor.name))
            table[method.path] = method
    return table

