"""Small conversions shared by the servicers."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp | None:
    """A Timestamp of a ``time.time()`` value; None (field unset) for 0, "never"."""
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
