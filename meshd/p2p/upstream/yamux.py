"""Yamux for meshd's connections: the same wire protocol, a leaner data path.

Works around these py-libp2p 0.8.1 behaviours of
``libp2p.stream_muxer.yamux.yamux`` (measured on one 64 KiB-write stream over
loopback; see docs/py-libp2p.md and bench/p2p_stream.py):

* ``Yamux.handle_incoming`` reads each frame through ``read_exactly`` over the
  secure session (header, then body: each a chain of copies), and formats
  several f-string debug messages per frame, logged or not; so does
  ``Yamux._write_frame`` per frame sent. The receiving side is the bottleneck
  (docs/py-libp2p.md#found-yamux-read-path).
* ``YamuxStream.read`` sends a WINDOW_UPDATE after every read
  (``_auto_tune_and_send_window_update``: ``PY_YAMUX_RELEASE_ON_READ`` is on by
  default), one Noise message and socket write per 64 KiB read, and reads its
  tuning from ``os.environ`` each time (docs/py-libp2p.md#found-window-update-per-read).
* ``YamuxStream.write`` splits a 64 KiB write in two frames (65524 + 12 bytes:
  ``MAX_MESSAGE_SIZE - HEADER_SIZE``), and when the send window is used up it
  polls it every 10 ms (``trio.sleep(0.01)``) instead of waiting for the
  WINDOW_UPDATE (docs/py-libp2p.md#found-write-split-and-poll).

:class:`MeshYamux` keeps everything else of py-libp2p's ``Yamux`` (stream
bookkeeping, close, GO_AWAY, keep-alive pings, the backlog, the 60 s body
timeout, the 5 s send-window timeout) and replaces the frame reader, the frame
writer and its streams' ``read``/``write``:

* frames are parsed straight from :class:`~meshd.p2p.upstream.noise.BulkNoiseSession`'s
  buffer, a DATA body copied once, into the stream's buffer;
* a stream grants its peer a ``RECEIVE_WINDOW`` (1 MiB) window, announced
  with the stream's SYN or ACK as the spec allows (the initial window is
  256 KiB and grows only through WINDOW_UPDATE deltas; py-libp2p, go-yamux and
  rust-yamux all apply the delta of a SYN/ACK window update), and credits what
  was read once half of it was (go-yamux's rule), not after every read;
* a write sends frames of up to 64 KiB of data (``FRAME_PAYLOAD``; frames may
  be as large as the window) and waits for the peer's WINDOW_UPDATE on an
  event when the window is used up.

A stream still holds back its writer once its peer stops reading: at most the
window is in flight, and the writer fails after 5 s without credit, as before.
A stream's reset gives its RST frame at most ``RESET_TIMEOUT``: py-libp2p
resets in unbounded shielded scopes, which a connection that cannot write
(see ``meshd.p2p.upstream.noise.WRITE_TIMEOUT``) held up
(docs/py-libp2p.md#found-reset-waits-for-lock).
"""

from __future__ import annotations

import logging
import struct

import trio
from libp2p.abc import IMuxedConn, ISecureConn
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_NORMAL,
    GO_AWAY_PROTOCOL_ERROR,
    HEADER_SIZE,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

from meshd.p2p.upstream.noise import BulkNoiseSession, acquire

log = logging.getLogger(__name__)

RECEIVE_WINDOW = 1 << 20  # per stream; the spec's initial window is DEFAULT_WINDOW_SIZE
WINDOW_GROWTH = RECEIVE_WINDOW - DEFAULT_WINDOW_SIZE  # the delta sent with SYN / ACK
RELEASE_THRESHOLD = RECEIVE_WINDOW // 2  # credit read bytes back once this many were read
FRAME_PAYLOAD = 64 * 1024  # data bytes per DATA frame sent
SEND_WINDOW_TIMEOUT = 5.0  # as py-libp2p: a writer without credit this long fails
WINDOW_RECHECK = 0.1  # a blocked writer re-checks the stream's state this often, regardless
DATA_READ_TIMEOUT = 60.0  # as py-libp2p: for the body of a DATA frame once its header came
RESET_TIMEOUT = 1.0  # for the RST frame of a reset; then the stream is reset without it
FRAMES_PER_CHECKPOINT = 64  # let other tasks run while frames are parsed from the buffer

_HEADER = struct.Struct(YAMUX_HEADER_FORMAT)


class MeshYamuxStream(YamuxStream):
    """A Yamux stream with event-driven send-window waits and batched window updates."""

    conn: MeshYamux

    def __init__(self, stream_id: int, conn: MeshYamux, is_initiator: bool) -> None:
        super().__init__(stream_id, conn, is_initiator)
        # Granted at once: the SYN or ACK that opens the stream carries WINDOW_GROWTH.
        self.recv_window = self.target_recv_window = RECEIVE_WINDOW
        self._unreleased = 0  # bytes read and not yet credited to the peer
        self._send_lock = trio.Lock()  # one writer at a time: its frames stay in order
        self._window_changed = trio.Event()

    def wake_writer(self) -> None:
        """The send window grew, or the stream closed: a blocked ``write`` re-checks."""
        self._window_changed.set()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        sent, total = 0, len(view)
        await acquire(self._send_lock)
        try:
            while sent < total:
                if self.send_closed:
                    raise MuxedStreamError("Stream is closed for sending")
                if self.closed:
                    raise MuxedStreamError("Stream is closed")
                if self.send_window <= 0:
                    await self._wait_for_window()
                    continue
                count = min(self.send_window, FRAME_PAYLOAD, total - sent)
                self.send_window -= count
                header = _HEADER.pack(0, TYPE_DATA, 0, self.stream_id, count)
                await self.conn._write_frame(header + view[sent:sent + count])
                sent += count
        finally:
            self._send_lock.release()

    async def _wait_for_window(self) -> None:
        deadline = trio.current_time() + SEND_WINDOW_TIMEOUT
        while self.send_window <= 0 and not (self.closed or self.send_closed):
            if trio.current_time() >= deadline:
                raise MuxedStreamError(
                    f"Timed out waiting for window update after {SEND_WINDOW_TIMEOUT:g} seconds.")
            if self._window_changed.is_set():
                self._window_changed = trio.Event()
            with trio.move_on_at(min(deadline, trio.current_time() + WINDOW_RECHECK)):
                await self._window_changed.wait()

    async def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (all buffered ones if ``n`` is -1 or None), at least one.

        The same outcomes as ``YamuxStream.read``: buffered data first (unless the
        stream was reset before the peer closed it), then ``MuxedStreamReset`` or
        ``MuxedStreamEOF``.
        """
        conn, stream_id = self.conn, self.stream_id
        while True:
            buffer = conn.stream_buffers.get(stream_id)
            if buffer is None:  # bookkeeping dropped: fully closed, or the connection ended
                if self.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                raise MuxedStreamEOF("Stream is closed for receiving")
            if buffer and (self.recv_closed or not self.reset_received):
                if n is None or n < 0 or n >= len(buffer):
                    data = bytes(buffer)
                    buffer.clear()
                else:
                    with memoryview(buffer) as view:
                        data = bytes(view[:n])
                    del buffer[:n]
                await self._release(len(data))
                if self.closed and not buffer:
                    await conn._finalize_stream(self, fully_closed=True)
                return data
            if self.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if self.closed:
                raise MuxedStreamReset("Stream is reset or closed")
            if conn.event_shutting_down.is_set():
                raise MuxedStreamEOF("Connection shut down")
            event = conn.stream_events.get(stream_id)
            if event is None:
                raise MuxedStreamEOF("Stream was removed")
            if event.is_set():  # an old wake-up: everything it signalled was checked above
                event = conn.stream_events[stream_id] = trio.Event()
            await event.wait()

    async def _release(self, count: int) -> None:
        """Credit read bytes back to the peer, half a window at a time."""
        self._unreleased += count
        if self._unreleased >= RELEASE_THRESHOLD and not self.recv_closed:
            increment, self._unreleased = self._unreleased, 0
            self.recv_window += increment
            await self.send_window_update(increment)

    async def close(self) -> None:
        await super().close()
        self.wake_writer()

    async def reset(self) -> None:
        # py-libp2p resets a stream whose opening failed inside an unbounded
        # shielded scope (BasicHost.new_stream, send_command), and its RST waits
        # for the connection's write lock: behind a write to a peer that stopped
        # reading, up to noise.WRITE_TIMEOUT, and SIGTERM with it (the chaos
        # campaign saw > 10 s). An RST is best-effort: after RESET_TIMEOUT the
        # stream is reset here without it (docs/py-libp2p.md#found-reset-waits-for-lock).
        with trio.move_on_after(RESET_TIMEOUT) as bounded:
            await super().reset()
        if bounded.cancelled_caught:
            self.closed = self.send_closed = self.recv_closed = self.reset_received = True
        self.wake_writer()


class MeshYamux(Yamux):
    """py-libp2p's Yamux over a :class:`~meshd.p2p.upstream.noise.BulkNoiseSession`, with
    :class:`MeshYamuxStream` streams and a frame reader working on its buffer."""

    secured_conn: BulkNoiseSession

    async def _write_frame(self, data: bytes) -> None:
        # The session encrypts and sends a write atomically: frames never interleave.
        await self.secured_conn.write(data)

    async def open_stream(self) -> YamuxStream:
        # As Yamux.open_stream, but a MeshYamuxStream, and the SYN grants its window.
        await self.stream_backlog_semaphore.acquire()
        async with self.streams_lock:
            if self.event_shutting_down.is_set():
                self.stream_backlog_semaphore.release()
                raise MuxedStreamError("Connection is shutting down")
            stream_id = self.next_stream_id
            self.next_stream_id += 2
            stream = MeshYamuxStream(stream_id, self, True)
            stream._owns_backlog_slot = True
            self._register(stream)
        try:
            await self._write_frame(
                _HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, WINDOW_GROWTH))
        except Exception as e:
            self.stream_backlog_semaphore.release()
            stream._backlog_slot_released = True
            async with self.streams_lock:
                self._unregister(stream_id)
            raise MuxedStreamError(f"Failed to send SYN: {e}") from e
        return stream

    def _register(self, stream: YamuxStream) -> None:
        self.streams[stream.stream_id] = stream
        self.stream_buffers[stream.stream_id] = bytearray()
        self.stream_events[stream.stream_id] = trio.Event()

    def _unregister(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self.stream_buffers.pop(stream_id, None)
        self.stream_events.pop(stream_id, None)

    async def close(self, error_code: int = GO_AWAY_NORMAL) -> None:
        streams = list(self.streams.values())
        try:
            await super().close(error_code)
        finally:
            _wake_writers(streams)

    async def _cleanup_on_error(self) -> None:
        streams = list(self.streams.values())
        try:
            await super()._cleanup_on_error()
        finally:
            _wake_writers(streams)

    async def handle_incoming(self) -> None:
        """Read frames until the connection ends (replaces ``Yamux.handle_incoming``)."""
        session = self.secured_conn
        parsed = 0
        try:
            while not self.event_shutting_down.is_set():
                if session.buffered < HEADER_SIZE:
                    await session.fill(HEADER_SIZE)
                _, typ, flags, stream_id, length = _HEADER.unpack(session.take(HEADER_SIZE))
                if typ == TYPE_DATA and session.buffered < length:
                    if length > MAX_WINDOW_SIZE:  # as py-libp2p: larger than any window
                        log.warning("yamux: %s announced a DATA frame of %d bytes; "
                                    "closing the connection", self.peer_id, length)
                        break
                    with trio.fail_after(DATA_READ_TIMEOUT):
                        await session.fill(length)
                if typ in (TYPE_DATA, TYPE_WINDOW_UPDATE):
                    await self._stream_frame(typ, flags, stream_id, length)
                elif typ == TYPE_PING:
                    await self._ping_frame(flags, length)
                elif typ == TYPE_GO_AWAY:
                    level = logging.WARNING if length == GO_AWAY_PROTOCOL_ERROR else logging.DEBUG
                    log.log(level, "yamux: GO_AWAY from %s, code %d", self.peer_id, length)
                    break
                parsed += 1
                if parsed % FRAMES_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
            else:
                return  # close() began, and does the rest
        except Exception as e:  # the connection ended or broke, or the peer sent garbage
            log.debug("yamux: connection with %s ends: %r", self.peer_id, e)
        # As Yamux.handle_incoming after an error, an end of stream or GO_AWAY.
        self.event_shutting_down.set()
        await self._cleanup_on_error()

    async def _stream_frame(self, typ: int, flags: int, stream_id: int, length: int) -> None:
        """A DATA or WINDOW_UPDATE frame (a DATA body is buffered in the session)."""
        session = self.secured_conn
        data_length = length if typ == TYPE_DATA else 0
        stream = self.streams.get(stream_id)
        accepted = False
        if flags & FLAG_SYN:
            if stream is not None:  # as py-libp2p: a duplicate SYN is answered with RST
                session.skip(data_length)
                await self._write_frame(
                    _HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
                return
            stream = MeshYamuxStream(stream_id, self, False)
            self._register(stream)
            accepted = True
        elif stream is None:  # a stream we no longer know: drop the frame
            session.skip(data_length)
            return
        if typ == TYPE_DATA:
            if data_length:
                session.take_into(self.stream_buffers[stream_id], data_length)
                stream.recv_window -= data_length
                if stream.recv_window < 0:  # as py-libp2p: tolerated, noted
                    log.warning("yamux: %s exceeded stream %d's receive window by %d bytes",
                                self.peer_id, stream_id, -stream.recv_window)
                    stream.recv_window = 0
        elif length:
            stream.send_window += length
            _wake_writers([stream])
        if flags & FLAG_FIN:
            stream.recv_closed = True
            if stream.send_closed:
                stream.closed = True
        if flags & FLAG_RST:
            stream.closed = stream.reset_received = True
            _wake_writers([stream])
        if data_length or flags & (FLAG_FIN | FLAG_RST):
            self.stream_events[stream_id].set()
        if stream.closed:
            self._finalize_stream_locked(stream, fully_closed=True)
        if accepted:
            if not flags & FLAG_RST:  # as py-libp2p: a stream reset on arrival gets no ACK
                await self._write_frame(
                    _HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id, WINDOW_GROWTH))
            await self.new_stream_send_channel.send(stream)

    async def _ping_frame(self, flags: int, opaque: int) -> None:
        if flags & FLAG_SYN:
            await self._write_frame(_HEADER.pack(0, TYPE_PING, FLAG_ACK, 0, opaque))
        elif flags & FLAG_ACK:  # as Yamux.handle_incoming: smoothed RTT
            rtt = trio.current_time() - self._ping_sent_time
            self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
            self._ping_event.set()


def _wake_writers(streams: list[YamuxStream]) -> None:
    for stream in streams:
        if isinstance(stream, MeshYamuxStream):
            stream.wake_writer()


class MeshMuxerMultistream(MuxerMultistream):
    """Muxer negotiation as py-libp2p's, which builds a ``Yamux`` for /yamux/1.0.0
    whatever class the muxer options name (``MuxerMultistream.new_conn``); over a
    bulk Noise session, that connection is a :class:`MeshYamux` instead
    (docs/py-libp2p.md#found-muxer-option-ignored)."""

    @classmethod
    def replacing(cls, upstream: MuxerMultistream) -> MeshMuxerMultistream:
        return cls(upstream.transports, upstream.negotiate_timeout)

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        muxed = await super().new_conn(conn, peer_id)
        if type(muxed) is not Yamux or not isinstance(conn, BulkNoiseSession):
            return muxed
        # py-libp2p's Yamux was only constructed (no I/O, no task): build ours instead.
        mesh = MeshYamux(conn, peer_id, is_initiator=muxed.is_initiator, on_close=muxed.on_close)
        for name in ("negotiated_muxer_protocol", "negotiated_security_protocol"):
            setattr(mesh, name, getattr(muxed, name, None))
        return mesh

