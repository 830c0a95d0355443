"""Noise transport sessions that read the socket in bulk and write each frame in one go.

Works around py-libp2p 0.8.1's Noise session
(``libp2p.security.secure_session.SecureSession`` over
``libp2p.security.noise.io.NoiseTransportReadWriter``), which costs a stream of
meshd's about two thirds of its throughput on the receiving side
(docs/py-libp2p.md#found-noise-throughput):

* ``BaseNoiseMsgReadWriter.read_msg`` reads every Noise message with two
  socket reads (``FixedSizeLenMsgReadWriter.next_msg_len`` reads the 2-byte
  length, then ``read_exactly`` the body), each through ``TrioTCPStream.read``'s
  lock, and ``SecureSession.read`` copies each message twice more
  (``io.BytesIO`` buffer, ``bytearray`` result), as does ``read_exactly``;
* ``BaseNoiseMsgReadWriter.write_msg`` sends each Noise message of a write
  with its own socket write (a 64 KiB Yamux frame is two messages).

:class:`BulkNoiseSession` takes over a session once py-libp2p's own XX
handshake has finished, with the keys and nonces of its two ``noiseprotocol``
cipher states, so the wire format is unchanged: 2-byte big-endian length,
ChaCha20-Poly1305 ciphertext and tag, at most 65535 bytes a message. It reads
up to ``RECEIVE_SIZE`` bytes a socket read and decrypts every whole message in
them; it encrypts all the messages of one write straight into one buffer and
sends it with one socket write (under a lock, so that nonce order is wire
order). Reads never run more than ``RECEIVE_SIZE`` bytes ahead of the reader,
so back-pressure is unchanged.
Meant for :mod:`meshd.p2p.upstream.yamux`, which reads frames straight from its buffer;
``read``/``write`` keep ``SecureSession``'s semantics for everything else
(multistream-select of the muxer).
"""

from __future__ import annotations

import collections
import logging
from typing import cast

import trio
from cryptography.exceptions import InvalidTag
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.abc import ReadWriteCloser
from libp2p.io.exceptions import (
    ConnectionClosedError,
    DecryptionFailedException,
    IncompleteReadError,
    IOException,
)
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.transport.websocket.connection import P2PWebSocketConnection
from noise.backends.default.ciphers import ChaCha20Cipher  # type: ignore[import-untyped]
from noise.state import CipherState  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

RECEIVE_SIZE = 256 * 1024  # bytes asked of the socket per read
# A socket write not finished after this long means the peer stopped taking
# data (behind a partition, frozen, gone without a FIN): the connection is
# closed, as go-yamux's ConnectionWriteTimeout (10 s) does. py-libp2p has no
# such bound: the writer held the session's write lock for as long as TCP
# retransmits (~15 min on Linux), every stream of the connection waited
# behind it, and so did py-libp2p's shielded stream resets at shutdown
# (docs/py-libp2p.md#found-unbounded-socket-write; the chaos campaign saw
# SIGTERM take > 10 s).
WRITE_TIMEOUT = 10.0
LENGTH_SIZE = 2  # Noise message length prefix, big-endian
TAG_SIZE = 16  # Poly1305
MAX_NONCE = 2**64 - 1  # as noiseprotocol: this one is never used


class NoiseCipher:
    """One direction of a finished Noise session: its keyed ChaCha20-Poly1305 and nonce.

    Taken from ``noiseprotocol``'s ``CipherState`` (not used afterwards), whose
    ``encrypt_with_ad``/``decrypt_with_ad`` it does without their layers of
    calls, and with ``encrypt_into``: the nonce is 4 zero bytes and the 64-bit
    little-endian message counter, as Noise specifies for ChaChaPoly.
    """

    def __init__(self, state: CipherState) -> None:
        self._aead = state.cipher.cipher  # cryptography's ChaCha20Poly1305
        self._counter: int = state.n

    def _nonce(self) -> bytes:
        if self._counter >= MAX_NONCE:
            raise IOException("Noise nonce exhausted: the connection must be closed")
        return b"\0\0\0\0" + self._counter.to_bytes(8, "little")

    def seal_into(self, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt into ``out``, ``len(plaintext) + TAG_SIZE`` bytes."""
        self._aead.encrypt_into(self._nonce(), plaintext, None, out)
        self._counter += 1

    def open(self, sealed: memoryview) -> bytes:
        plain: bytes = self._aead.decrypt(self._nonce(), sealed, None)
        self._counter += 1
        return plain


class BulkNoiseSession(SecureSession):
    """A finished Noise session with buffered reads and one socket write per ``write``.

    Besides ``read``/``write``, the frame reader of :mod:`meshd.p2p.upstream.yamux` uses
    ``buffered``, ``fill``, ``take``, ``take_into`` and ``skip``: plaintext is
    kept as the decrypted messages themselves, and handed out with one copy.
    """

    def __init__(self, handshaken: SecureSession, raw: ReadWriteCloser,
                 send: NoiseCipher, receive: NoiseCipher) -> None:
        super().__init__(local_peer=handshaken.local_peer,
                         local_private_key=handshaken.local_private_key,
                         remote_peer=handshaken.remote_peer,
                         remote_permanent_pubkey=handshaken.remote_permanent_pubkey,
                         is_initiator=handshaken.is_initiator, conn=handshaken.conn)
        self._raw = raw
        # A WebSocket message must be bytes (trio-websocket refuses a
        # bytearray); a socket takes any buffer, without the copy.
        self._bytes_only = isinstance(getattr(raw, "stream", raw), P2PWebSocketConnection)
        self._send, self._receive = send, receive
        self._write_lock = trio.Lock()
        self._partial = bytearray()  # the start of a Noise message not wholly received
        self._plain: collections.deque[bytes] = collections.deque()  # decrypted messages
        self._offset = 0  # bytes of _plain[0] already handed out
        self.buffered = 0  # plaintext bytes received and not yet handed out

    @classmethod
    def take_over(cls, session: ISecureConn) -> ISecureConn:
        """The bulk session for ``session``, just after its handshake; else ``session``.

        Only a py-libp2p Noise session with ChaCha20-Poly1305 in both directions
        (libp2p's Noise suite) is taken over, and before anything else read it.
        """
        if not (isinstance(session, SecureSession)
                and isinstance(session.conn, NoiseTransportReadWriter)):
            return session
        protocol = session.conn.noise_state.noise_protocol
        send, receive = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
        if not (isinstance(send, CipherState) and isinstance(receive, CipherState)
                and isinstance(send.cipher, ChaCha20Cipher)
                and isinstance(receive.cipher, ChaCha20Cipher)):
            return session
        return cls(session, session.conn.read_writer.read_write_closer,
                   NoiseCipher(send), NoiseCipher(receive))

    # --- writing ------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Encrypt ``data`` as Noise messages of at most 65535 bytes; one socket write."""
        size = len(data)
        messages = max(1, -(-size // MAX_PLAINTEXT_LENGTH))
        wire = bytearray(size + messages * (LENGTH_SIZE + TAG_SIZE))
        plain, out = memoryview(data), memoryview(wire)
        await acquire(self._write_lock)
        try:
            at = 0
            for start in range(0, max(size, 1), MAX_PLAINTEXT_LENGTH):
                chunk = plain[start:start + MAX_PLAINTEXT_LENGTH]
                sealed = len(chunk) + TAG_SIZE
                out[at:at + LENGTH_SIZE] = sealed.to_bytes(LENGTH_SIZE, "big")
                at += LENGTH_SIZE
                self._send.seal_into(chunk, out[at:at + sealed])
                at += sealed
            with trio.move_on_after(WRITE_TIMEOUT) as stalled:
                await self._raw.write(bytes(wire) if self._bytes_only
                                      else cast(bytes, wire))  # typed bytes; any buffer works
            if stalled.cancelled_caught:
                # Part of a Noise message may be on the wire: nothing more can
                # follow it. Closing the socket fails every reader and writer.
                log.info("closing a connection whose peer stopped reading", extra={
                    "peer_id": str(self.remote_peer), "seconds": WRITE_TIMEOUT})
                with trio.CancelScope(shield=True):
                    await self._raw.close()
                raise ConnectionClosedError(
                    f"a write to {self.remote_peer} did not finish within {WRITE_TIMEOUT:.0f} s "
                    "(the peer stopped reading); connection closed", transport="tcp")
        finally:
            self._write_lock.release()

    # --- reading ------------------------------------------------------------------------------

    async def read(self, n: int | None = None) -> bytes:
        """``n`` bytes (all buffered ones, at least one message's, if ``n`` is None).

        Like ``SecureSession.read``: exactly ``n`` bytes, or an
        ``IncompleteReadError`` if the connection ends first.
        """
        if n == 0:
            return b""
        if n is None:
            await self.fill(1)
            return self.take(self.buffered)
        await self.fill(n)
        return self.take(n)

    async def fill(self, n: int) -> None:
        """Receive until at least ``n`` plaintext bytes are buffered."""
        while self.buffered < n:
            data = await self._raw.read(RECEIVE_SIZE)
            if not data:
                pending = self.buffered + len(self._partial)
                raise IncompleteReadError(
                    f"Noise connection closed: {n} bytes wanted, {pending} received",
                    expected_bytes=n, received_bytes=pending)
            self._decrypt(data)

    def take(self, n: int) -> bytes:
        """``n`` buffered bytes (``n <= buffered``)."""
        first, offset = self._plain[0], self._offset
        end = offset + n
        if end <= len(first):  # the usual case: within one message
            data = first if offset == 0 and end == len(first) else first[offset:end]
            self._advance(n)
            return data
        target = bytearray()
        self.take_into(target, n)
        return bytes(target)

    def take_into(self, target: bytearray, n: int) -> None:
        """Append ``n`` buffered bytes (``n <= buffered``) to ``target``."""
        while n:
            first, offset = self._plain[0], self._offset
            count = min(n, len(first) - offset)
            target += memoryview(first)[offset:offset + count]
            self._advance(count)
            n -= count

    def skip(self, n: int) -> None:
        """Drop ``n`` buffered bytes (``n <= buffered``)."""
        while n:
            count = min(n, len(self._plain[0]) - self._offset)
            self._advance(count)
            n -= count

    def _advance(self, n: int) -> None:
        self.buffered -= n
        self._offset += n
        if self._offset == len(self._plain[0]):
            self._plain.popleft()
            self._offset = 0

    def _decrypt(self, data: bytes) -> None:
        """Decrypt every whole Noise message of what was received so far."""
        view, start, end = memoryview(data), 0, len(data)
        if self._partial:
            partial = self._partial
            if len(partial) < LENGTH_SIZE:
                start = min(LENGTH_SIZE - len(partial), end)
                partial += view[:start]
                if len(partial) < LENGTH_SIZE:
                    return
            missing = LENGTH_SIZE + int.from_bytes(partial[:LENGTH_SIZE], "big") - len(partial)
            if end - start < missing:
                partial += view[start:]
                return
            partial += view[start:start + missing]
            start += missing
            self._partial = bytearray()
            self._open(memoryview(partial)[LENGTH_SIZE:])
        while end - start >= LENGTH_SIZE:
            length = data[start] << 8 | data[start + 1]
            if end - start - LENGTH_SIZE < length:
                break
            start += LENGTH_SIZE
            self._open(view[start:start + length])
            start += length
        if start < end:
            self._partial = bytearray(view[start:])

    def _open(self, sealed: memoryview) -> None:
        try:
            plain = self._receive.open(sealed)
        except InvalidTag:
            raise DecryptionFailedException(
                f"a Noise message from {self.remote_peer} failed authentication") from None
        if plain:
            self._plain.append(plain)
            self.buffered += len(plain)


async def acquire(lock: trio.Lock) -> None:
    """``lock.acquire()``, without its round trip through the scheduler when the lock
    is free: the socket I/O that follows is a checkpoint anyway."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


class BulkNoiseTransport(NoiseTransport):
    """py-libp2p's Noise transport (XX handshake unchanged), with bulk sessions after it."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return BulkNoiseSession.take_over(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return BulkNoiseSession.take_over(await super().secure_outbound(conn, peer_id))
