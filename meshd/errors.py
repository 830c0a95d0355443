"""Errors of the domain layer that an API client may see.

The message is written for a person (what happened, what to do). The API maps
each class to one gRPC status code in meshd/rpc/status.py; nothing else in the
daemon knows about gRPC.
"""


class MeshError(Exception):
    """Base class of the errors a client may be shown."""


class InvalidArgument(MeshError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class NotFound(MeshError):
    """The named object does not exist."""


class FailedPrecondition(MeshError):
    """The request is valid but the node is not in a state to serve it."""


class Unavailable(MeshError):
    """The node cannot serve the request now (e.g. shutting down); retry later."""


class ResourceExhausted(MeshError):
    """A client used more than its share (e.g. fell too far behind a stream)."""


class DeadlineExceeded(MeshError):
    """The work did not finish before the caller's deadline."""


class PeerError(MeshError):
    """A remote peer answered with an error, or broke the protocol."""
