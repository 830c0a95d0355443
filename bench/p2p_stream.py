"""Benchmark: one libp2p stream of meshd's host vs plain, encrypted and TLS TCP, and setup.

Two processes on loopback, each running trio: a server (this script started
again with a hidden flag) and the client (this process). Each has a libp2p host
opened with ``meshd.p2p.host.open_p2p_host`` (TCP + Noise + Yamux, the Mesh
handshake, DHT and gossipsub running as in meshd) and the server also listens
on three trio TCP ports: plain, carrying ChaCha20-Poly1305 frames (see
``AeadStream``: the cipher of libp2p's Noise, the encrypted baseline), and
wrapped in ``trio.SSLStream`` (TLS 1.3, a self-signed ECDSA P-256 certificate
made in-process with ``cryptography``).

* **Throughput.** The client sends ``--mib`` MiB (default 64) in 64 KiB writes
  on one stream, after an 8-byte length; the server counts the bytes and answers
  one byte at the end. Timed from the length to the answer, on an open stream
  (libp2p: opened, protocol negotiated) or connection (TLS: handshake done).
  Subject: a libp2p stream (``/bench/sink/1.0.0`` on the underlying py-libp2p
  host). Baselines: plain trio TCP, trio TCP + ChaCha20-Poly1305 frames (the
  goal: libp2p at least half of it), and trio TCP + TLS. Transports run
  interleaved, ``--rounds`` times after a 1 MiB warmup each; MB/s (10^6 bytes)
  of the median round, and the CPU time of both processes per MiB.
* **Connection setup.** ``--connections`` fresh connections per kind
  (interleaved, after 2 untimed each): libp2p ``P2PHost.connect`` (TCP dial,
  multistream, Noise, Yamux, and the Mesh hello exchange until admission), each
  from a new client host started and stopped untimed (a new peer joining);
  ``--same-host`` reconnects one client host instead, with
  ``membership.disconnect`` in between (this currently fails in about half of the
  runs: see bench/README.md). Baselines: ``trio.open_tcp_stream`` alone,
  and followed by the TLS handshake. p50 and p99 in ms (with 20 samples p99 is
  the max).

Ratios are libp2p over each baseline. Every step runs under ``trio.fail_after``.
py-libp2p's log records are silenced below CRITICAL (``--verbose`` shows them).
About 10-15 s with the defaults.

Run from the repository root: ``.venv/bin/python bench/p2p_stream.py [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import select
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import output
import trio

NETWORK_ID = "net_benchbenchbenchbenchbenchbe"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
SINK = "/bench/sink/1.0.0"
CHUNK = 64 * 1024
WARMUP_BYTES = 1 << 20
KINDS = ("libp2p", "plain", "chacha", "tls")  # throughput
SETUP_KINDS = ("libp2p", "plain", "tls")  # the ChaCha baseline has no handshake to time
LABELS = {"libp2p": "libp2p (Noise+Yamux)", "plain": "plain TCP",
          "chacha": "ChaCha20-Poly1305 TCP", "tls": "TLS 1.3 TCP"}
GOAL = 0.5  # libp2p / the ChaCha20-Poly1305 baseline (the cipher Noise uses)
AEAD_FRAME = CHUNK  # plaintext bytes per frame of the ChaCha baseline
AEAD_RECEIVE = 256 * 1024  # bytes asked of the socket per receive in that baseline
SETUP_LABELS = {"libp2p": "libp2p dial+Noise+Yamux+hello", "plain": "TCP connect",
                "tls": "TCP connect + TLS handshake"}
START_TIMEOUT = 30.0  # for the server process to be ready
CONNECT_TIMEOUT = 10.0  # per connection attempt
HOST_STOP_TIMEOUT = 5.0  # a new client host's start and stop (meshd bounds the stop to 3 s)
MIN_TRANSFER_TIMEOUT = 30.0  # per transfer (more for large --mib: 1 s per MiB)
SETTLE = 0.05  # after closing a connection, so that the server has cleaned up


def quiet_libp2p() -> None:
    """py-libp2p logs expected events (closed streams, refused redials) as warnings and
    errors; with no handler they reach stderr. Only CRITICAL, unless --verbose."""
    # its import resets the "libp2p" logger: docs/py-libp2p.md#trap-15
    import libp2p  # noqa: F401

    if "--verbose" not in sys.argv:
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)


# --- transports: send / receive over libp2p streams and trio streams -------------------------

class Pipe:
    """The few operations a transfer needs, over a libp2p stream or a trio stream."""

    def __init__(self, send: Callable[[bytes], Awaitable[Any]],
                 receive: Callable[[int], Awaitable[bytes]],
                 close: Callable[[], Awaitable[Any]]) -> None:
        self.send, self._receive, self.close = send, receive, close

    @classmethod
    def of_libp2p(cls, stream: Any) -> Pipe:
        from libp2p.network.stream.exceptions import StreamEOF

        async def receive(n: int) -> bytes:
            try:
                return bytes(await stream.read(n))
            except StreamEOF:
                return b""

        return cls(stream.write, receive, stream.close)

    @classmethod
    def of_trio(cls, stream: trio.abc.Stream) -> Pipe:
        return cls(stream.send_all, stream.receive_some, stream.aclose)

    async def receive_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = await self._receive(n - len(data))
            if not more:
                raise EOFError(f"end of stream after {len(data)} of {n} bytes")
            data += more
        return data

    async def receive_some(self, n: int) -> bytes:
        return await self._receive(n)


class AeadStream:
    """Trio TCP carrying ChaCha20-Poly1305 frames: the encrypted baseline.

    The cipher Noise uses in libp2p, with Noise's nonce (4 zero bytes, then a
    64-bit little-endian counter) and one key per direction. Each ``send_all``
    of up to ``AEAD_FRAME`` bytes is one frame: a 4-byte big-endian length, then
    ciphertext and the 16-byte tag, in one socket write. The receiver reads the
    socket ``AEAD_RECEIVE`` bytes at a time, and decrypts (and authenticates)
    each whole frame before handing out its plaintext. No handshake: the keys
    come from the server's startup line.
    """

    def __init__(self, stream: trio.abc.Stream, send_key: bytes, receive_key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self._stream = stream
        self._send, self._receive = ChaCha20Poly1305(send_key), ChaCha20Poly1305(receive_key)
        self._send_nonce = self._receive_nonce = 0
        self._raw = bytearray()  # received, not yet decrypted
        self._plain = memoryview(b"")  # decrypted, not yet handed out

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return b"\0\0\0\0" + counter.to_bytes(8, "little")

    async def send_all(self, data: bytes) -> None:
        frames = []
        for start in range(0, len(data), AEAD_FRAME):
            sealed = self._send.encrypt(self._nonce(self._send_nonce),
                                        data[start:start + AEAD_FRAME], None)
            self._send_nonce += 1
            frames += (len(sealed).to_bytes(4, "big"), sealed)
        await self._stream.send_all(b"".join(frames))

    async def receive_some(self, max_bytes: int) -> bytes:
        while not self._plain:
            if not await self._next_frame():
                return b""
        data, self._plain = self._plain[:max_bytes], self._plain[max_bytes:]
        return bytes(data)

    async def _next_frame(self) -> bool:
        """Decrypt one frame into ``_plain``; False at a clean end of stream."""
        while len(self._raw) < 4 or len(self._raw) < 4 + int.from_bytes(self._raw[:4], "big"):
            more = await self._stream.receive_some(AEAD_RECEIVE)
            if not more:
                if self._raw:
                    raise EOFError("end of stream inside a ChaCha20-Poly1305 frame")
                return False
            self._raw += more
        end = 4 + int.from_bytes(self._raw[:4], "big")
        with memoryview(self._raw) as raw:  # decrypted straight from the receive buffer
            plain = self._receive.decrypt(self._nonce(self._receive_nonce), raw[4:end], None)
        self._plain = memoryview(plain)
        self._receive_nonce += 1
        del self._raw[:end]
        return True

    async def aclose(self) -> None:
        await self._stream.aclose()


async def sink(pipe: Pipe) -> None:
    """Server side of a transfer: read the length, count that many bytes, answer one byte."""
    total = int.from_bytes(await pipe.receive_exactly(8), "big")
    received = 0
    while received < total:
        data = await pipe.receive_some(min(CHUNK, total - received))
        if not data:
            raise EOFError(f"end of stream after {received} of {total} bytes")
        received += len(data)
    await pipe.send(b"\x01")


async def transfer(pipe: Pipe, total: int) -> float:
    """Client side: send ``total`` bytes after their length; seconds until the answer."""
    chunk = os.urandom(CHUNK)
    started = time.perf_counter()
    await pipe.send(total.to_bytes(8, "big"))
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        await pipe.send(chunk if n == CHUNK else chunk[:n])
        sent += n
    if await pipe.receive_exactly(1) != b"\x01":
        raise RuntimeError("the sink answered something else")
    return time.perf_counter() - started


def make_certificate() -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate for "localhost": (cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --- server (run with --serve) ---------------------------------------------------------------

async def _quietly(handler: Callable[[], Awaitable[None]]) -> None:
    # A handler must never take the server down: connection-setup probes close
    # without sending anything, and that is expected.
    with contextlib.suppress(Exception):
        await handler()


async def serve() -> None:
    from libp2p.custom_types import TProtocol

    from meshd.p2p.host import open_p2p_host

    cert_pem, key_pem = make_certificate()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with _pem_files(cert_pem, key_pem) as (cert_path, key_path):
        server_ctx.load_cert_chain(cert_path, key_path)
    to_server, to_client = os.urandom(32), os.urandom(32)  # ChaCha20-Poly1305 keys

    async def libp2p_handler(stream: Any) -> None:
        pipe = Pipe.of_libp2p(stream)
        await _quietly(lambda: sink(pipe))
        with contextlib.suppress(Exception):
            await stream.close()

    async def plain_handler(stream: trio.SocketStream) -> None:
        async with stream:
            await _quietly(lambda: sink(Pipe.of_trio(stream)))

    async def chacha_handler(stream: trio.SocketStream) -> None:
        async with stream:
            await _quietly(lambda: sink(Pipe.of_trio(AeadStream(stream, to_client, to_server))))

    async def tls_handler(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        await _quietly(lambda: sink(Pipe.of_trio(tls)))
        with trio.move_on_after(1), contextlib.suppress(Exception):
            await tls.aclose()

    async with open_p2p_host(os.urandom(32), LOOPBACK, NETWORK_ID) as host, \
            trio.open_nursery() as nursery:
        host._host.set_stream_handler(TProtocol(SINK), libp2p_handler)
        plain = await nursery.start(functools.partial(trio.serve_tcp, plain_handler, 0,
                                                      host="127.0.0.1"))
        chacha = await nursery.start(functools.partial(trio.serve_tcp, chacha_handler, 0,
                                                       host="127.0.0.1"))
        tls = await nursery.start(functools.partial(trio.serve_tcp, tls_handler, 0,
                                                    host="127.0.0.1"))
        info = {"libp2p": host.listen_addrs()[0], "peer_id": host.peer_id,
                "plain_port": plain[0].socket.getsockname()[1],
                "chacha_port": chacha[0].socket.getsockname()[1],
                "chacha_keys": [to_server.hex(), to_client.hex()],
                "tls_port": tls[0].socket.getsockname()[1], "cert_pem": cert_pem.decode()}
        print(json.dumps(info), flush=True)
        # The parent closes our stdin to stop us; that also works if it dies.
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def _pem_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mesh-bench-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(key_path, "wb") as f:
            f.write(key_pem)
        yield cert_path, key_path


# --- client ----------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Client:
    def __init__(self, host: Any, info: dict[str, Any], server_pid: int) -> None:
        from libp2p.peer.id import ID

        self.host = host
        self.info = info
        self.server_pid = server_pid
        self.peer = ID.from_base58(info["peer_id"])
        self.client_ctx = ssl.create_default_context(cadata=info["cert_pem"])
        self.client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    # Open an established stream/connection of each kind (handshakes done).
    async def open(self, kind: str) -> Pipe:
        from libp2p.custom_types import TProtocol

        if kind == "libp2p":
            await self.host.connect(self.info["libp2p"])  # returns at once if connected
            return Pipe.of_libp2p(await self.host._host.new_stream(self.peer, [TProtocol(SINK)]))
        stream = await trio.open_tcp_stream("127.0.0.1", self.info[f"{kind}_port"])
        if kind == "plain":
            return Pipe.of_trio(stream)
        if kind == "chacha":
            to_server, to_client = (bytes.fromhex(k) for k in self.info["chacha_keys"])
            return Pipe.of_trio(AeadStream(stream, to_server, to_client))
        tls = trio.SSLStream(stream, self.client_ctx, server_hostname="localhost")
        await tls.do_handshake()
        return Pipe.of_trio(tls)

    async def throughput(self, kind: str, total: int) -> dict[str, float]:
        with trio.fail_after(max(MIN_TRANSFER_TIMEOUT, total / (1 << 20))):
            pipe = await self.open(kind)
            cpu = time.process_time(), _cpu_seconds(self.server_pid)
            seconds = await transfer(pipe, total)
            cpu_used = time.process_time() - cpu[0] + _cpu_seconds(self.server_pid) - cpu[1]
            await pipe.close()
        return {"seconds": seconds, "mb_s": total / seconds / 1e6,
                "cpu_ms_per_mib": cpu_used * 1000 / (total / (1 << 20))}

    async def disconnect(self) -> None:
        """Close the libp2p connection and wait until both the swarm and membership agree.

        ``membership.disconnect`` (not ``close_connection``): its cooldown stops
        this side's gossipsub and DHT from redialling while py-libp2p closes the
        connection (it waits 0.1 s before reporting the close); the next
        ``connect`` clears the cooldown. The server side has no such cooldown:
        if it redials in that window, the peer stays admitted with no connection
        here (bench/README.md), and this raises.
        """
        peer_id = self.info["peer_id"]
        await self.host.membership.disconnect(peer_id)
        with trio.move_on_after(5):
            while (self.host.membership.is_admitted(peer_id)
                   or self.host._host.get_network().get_connections(self.peer)):
                with trio.move_on_after(0.01):  # the event, or poll: bounded either way
                    await self.host.membership.next_change()
            return
        raise RuntimeError(f"after disconnecting, {peer_id} is admitted="
                           f"{self.host.membership.is_admitted(peer_id)} with "
                           f"{len(self.host._host.get_network().get_connections(self.peer))} "
                           "connection(s) in the swarm")

    async def libp2p_setup_time(self, same_host: bool) -> float:
        """Seconds for ``host.connect``: dial, Noise, Yamux, the Mesh hello, admission."""
        if same_host:
            started = time.perf_counter()
            await self.host.connect(self.info["libp2p"])
            elapsed = time.perf_counter() - started
            await self.disconnect()
            return elapsed
        from meshd.p2p.host import open_p2p_host

        # A new client host each time (started and stopped untimed): a new peer
        # connecting, with no state left from an earlier connection on either side.
        async with open_p2p_host(os.urandom(32), LOOPBACK, NETWORK_ID) as fresh:
            started = time.perf_counter()
            await fresh.connect(self.info["libp2p"])
            elapsed = time.perf_counter() - started
            # Untimed: the server admits us a moment after we admitted it (its own
            # hello); leaving before that, it would log us as refused. Its
            # members-only services answer a ping once it has.
            await fresh.ping(self.info["peer_id"], 1)
            return elapsed

    async def setup_time(self, kind: str, same_host: bool) -> float:
        """Seconds to establish one fresh connection of ``kind``; closed untimed after."""
        with trio.fail_after(CONNECT_TIMEOUT + HOST_STOP_TIMEOUT):
            if kind == "libp2p":
                elapsed = await self.libp2p_setup_time(same_host)
            else:
                started = time.perf_counter()
                pipe = await self.open(kind)
                elapsed = time.perf_counter() - started
                with trio.move_on_after(1), contextlib.suppress(Exception):
                    await pipe.close()
        await trio.sleep(SETTLE)
        return elapsed


async def measure(info: dict[str, Any], server_pid: int, mib: int, rounds: int,
                  connections: int, same_host: bool) -> dict[str, Any]:
    from meshd.p2p.host import open_p2p_host

    async with open_p2p_host(os.urandom(32), LOOPBACK, NETWORK_ID) as host:
        client = Client(host, info, server_pid)
        # Connection setup first, while the hosts are fresh (nothing else runs).
        setup: dict[str, list[float]] = {kind: [] for kind in SETUP_KINDS}
        for i in range(connections + 2):
            for kind in SETUP_KINDS:
                elapsed = await client.setup_time(kind, same_host)
                if i >= 2:  # two untimed attempts each: first-use costs
                    setup[kind].append(elapsed)
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for kind in KINDS:
            await client.throughput(kind, WARMUP_BYTES)
        for _ in range(rounds):
            for kind in KINDS:
                runs[kind].append(await client.throughput(kind, mib << 20))
    throughput = {}
    for kind, samples in runs.items():
        ordered = sorted(samples, key=lambda r: r["mb_s"])
        throughput[kind] = {**ordered[len(ordered) // 2], "mb_s_min": ordered[0]["mb_s"],
                            "mb_s_max": ordered[-1]["mb_s"]}
    setup_ms = {}
    for kind, samples in setup.items():
        ordered = sorted(1000 * s for s in samples)
        setup_ms[kind] = {"p50": statistics.median(ordered), "p99": _percentile(ordered, 0.99),
                          "min": ordered[0], "max": ordered[-1]}
    mb_s = {kind: throughput[kind]["mb_s"] for kind in KINDS}
    return {
        "throughput": throughput, "setup_ms": setup_ms,
        "throughput_ratio": {"libp2p/plain": mb_s["libp2p"] / mb_s["plain"],
                             "libp2p/chacha": mb_s["libp2p"] / mb_s["chacha"],
                             "libp2p/tls": mb_s["libp2p"] / mb_s["tls"]},
        "throughput_goal": {"libp2p/chacha": GOAL},
        "setup_p50_ratio": {"libp2p/plain": setup_ms["libp2p"]["p50"] / setup_ms["plain"]["p50"],
                            "libp2p/tls": setup_ms["libp2p"]["p50"] / setup_ms["tls"]["p50"]},
        "setup_p99_ratio": {"libp2p/plain": setup_ms["libp2p"]["p99"] / setup_ms["plain"]["p99"],
                            "libp2p/tls": setup_ms["libp2p"]["p99"] / setup_ms["tls"]["p99"]},
    }


# --- orchestration ---------------------------------------------------------------------------

@contextlib.contextmanager
def server_process() -> Iterator[tuple[int, dict[str, Any]]]:
    """The ``--serve`` process, ready when entered: (its pid, its addresses), stopped on exit."""
    argv = [sys.executable, os.path.abspath(__file__), "--serve"]
    if "--verbose" in sys.argv:
        argv.append("--verbose")
    proc = subprocess.Popen(argv,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        readable, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if readable else ""
        if not line.startswith("{"):
            raise RuntimeError(f"the server did not start (exit code {proc.poll()})")
        yield proc.pid, json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_all(mib: int, rounds: int, connections: int, same_host: bool) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    with server_process() as (pid, info):
        results = trio.run(measure, info, pid, mib, rounds, connections, same_host)
    return {"transport": "loopback TCP", "mib": mib, "chunk_bytes": CHUNK, "rounds": rounds,
            "connections": connections, "libp2p_setup": "same host" if same_host else "new host",
            **results, "loadavg_before": loadavg}


def print_table(results: dict[str, Any]) -> None:
    print(f"one stream, {results['mib']} MiB in {results['chunk_bytes'] // 1024} KiB writes, "
          f"loopback, median of {results['rounds']} interleaved rounds "
          f"(load average before: {results['loadavg_before']:.2f})")
    print(f"{'transport':22} {'MB/s':>8} {'(min-max)':>15} {'CPU ms/MiB (both ends)':>23}")
    for kind in KINDS:
        t = results["throughput"][kind]
        spread = f"({t['mb_s_min']:.0f}-{t['mb_s_max']:.0f})"
        print(f"{LABELS[kind]:22} {t['mb_s']:>8.1f} {spread:>15} {t['cpu_ms_per_mib']:>23.2f}")
    r = results["throughput_ratio"]
    print(f"ratio libp2p/ChaCha20-Poly1305 MB/s: {r['libp2p/chacha']:.3f} (goal >= {GOAL}: "
          f"{'met' if r['libp2p/chacha'] >= GOAL else 'NOT met'})")
    print(f"ratio libp2p/plain MB/s: {r['libp2p/plain']:.3f}, libp2p/TLS: {r['libp2p/tls']:.3f}")
    print()
    print(f"connection setup, {results['connections']} fresh connections each "
          f"(interleaved, +2 untimed; libp2p from a {results['libp2p_setup']} each time), ms")
    print(f"{'':30} {'p50':>7} {'p99':>7} {'min':>7} {'max':>7}")
    for kind in SETUP_KINDS:
        s = results["setup_ms"][kind]
        print(f"{SETUP_LABELS[kind]:30} {s['p50']:>7.2f} {s['p99']:>7.2f} {s['min']:>7.2f} "
              f"{s['max']:>7.2f}")
    p50, p99 = results["setup_p50_ratio"], results["setup_p99_ratio"]
    print(f"ratio libp2p/TCP: p50 {p50['libp2p/plain']:.1f}, p99 {p99['libp2p/plain']:.1f}; "
          f"libp2p/TLS: p50 {p50['libp2p/tls']:.1f}, p99 {p99['libp2p/tls']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB sent per transfer")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved transfer rounds; each transport reports its median")
    parser.add_argument("--connections", type=int, default=20,
                        help="timed fresh connections per kind")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--same-host", action="store_true",
                        help="libp2p setup: reconnect one client host (disconnect in between) "
                             "instead of a new client host per connection")
    parser.add_argument("--verbose", action="store_true",
                        help="show py-libp2p's warnings and errors (both processes)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_libp2p()
    if args.serve:
        trio.run(serve)
        return
    if args.mib < 1 or args.rounds < 1 or args.connections < 1:
        parser.error("--mib, --rounds and --connections must be at least 1")
    results = run_all(args.mib, args.rounds, args.connections, args.same_host)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
