"""Length-prefixed frames on libp2p streams: an unsigned varint, then the bytes.

The framing of every Mesh wire message (docs/protocol.md). Reads are capped:
a peer announcing a frame larger than the caller allows gets FrameTooLarge
before anything is buffered.
"""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from meshcore.varint import uvarint

MAX_VARINT_BYTES = 10  # enough for 2**64


class FrameError(Exception):
    """The peer sent something that is not a valid frame."""


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class StreamEnded(FrameError):
    """The stream ended before a whole frame arrived."""


async def write_frame(stream: INetStream, payload: bytes) -> None:
    await stream.write(uvarint(len(payload)) + payload)


async def read_frame(stream: INetStream, max_size: int) -> bytes:
    """Read one frame of at most ``max_size`` bytes.

    Raises:
        FrameTooLarge: the announced length exceeds ``max_size``.
        StreamEnded: the stream ended first (py-libp2p raises StreamEOF:
            docs/py-libp2p.md#trap-13).
    """
    size = await _read_uvarint(stream)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    return await _read_exactly(stream, size)


async def _read_uvarint(stream: INetStream) -> int:
    value = 0
    for index in range(MAX_VARINT_BYTES):
        byte = (await _read_exactly(stream, 1))[0]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value
    raise FrameError("frame length varint is longer than 10 bytes")


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        try:
            chunk = await stream.read(size - len(buffer))
        except StreamEOF:
            chunk = b""
        if not chunk:
            raise StreamEnded(f"stream ended after {len(buffer)} of {size} bytes")
        buffer += chunk
    return bytes(buffer)
