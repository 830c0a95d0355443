"""Benchmark: erasure coding and hashing a file's stripes vs SHA-256 alone.

What the erasure-coded layout does to each stripe before placing it
(mesh_storage: erasure.py, merkle.py): code it k-of-n with zfec and build each
piece's segment Merkle root, which names the piece and answers audits (one
pass of hashing per piece, not a name hash and a Merkle tree). Also measured:
the file's UnixFS root CID (unixfs.py), which a client computes once per file.
The baseline, in the same run, is SHA-256 over the same bytes once: the least
any content-addressed store does. Goal (the storage issue): encode + hash
throughput >= 0.5x SHA-256 alone. With n/k = 2 the pieces are twice the
file's bytes, so hashing them alone costs 2x the baseline.

Run from the repository root: ``.venv/bin/python bench/storage_coding.py [--json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable

import output
from mesh_storage import erasure, merkle, unixfs
from mesh_storage.manifest import PIECE, SEGMENT
from mesh_storage.pieces import piece_cid

MIB = 1 << 20
GOAL = 0.5


def throughput(work: Callable[[], object], size: int, rounds: int) -> float:
    """MiB/s of ``work`` over ``size`` bytes, the median of ``rounds``."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return size / MIB / statistics.median(seconds)


def code_stripes(data: bytes, coding: erasure.Coding, stripe: int, hash_pieces: bool = True,
                 ) -> None:
    """What PUT_STRIPE does to each stripe (mesh_storage/files.py ``_code``): zfec, then
    each piece's CID (SHA-256) and Merkle root over SEGMENT-byte segments."""
    for offset in range(0, len(data), stripe):
        for piece in erasure.encode(data[offset:offset + stripe], coding):
            if hash_pieces:
                piece_cid(piece)
                merkle.root(piece, SEGMENT)


def table(results: dict[str, object]) -> None:
    print(f"{results['mib']} MiB of random bytes, stripes of {results['stripe_kib']} KiB, "
          f"k={results['k']} n={results['n']}, segments of {results['segment']} B, "
          f"median of {results['rounds']} rounds")
    print(f"SHA-256 once (baseline)            {results['sha256_mib_s']:>8.1f} MiB/s")
    print(f"encode + CID + Merkle of each piece {results['coding_mib_s']:>7.1f} MiB/s "
          f"(ratio {results['ratio']}, goal >= {GOAL})")
    print(f"  of which zfec's encoding alone   {results['encode_mib_s']:>8.1f} MiB/s "
          f"(ratio {results['encode_ratio']})")
    print(f"UnixFS root CID of the file        {results['cid_mib_s']:>8.1f} MiB/s "
          f"(ratio {results['cid_ratio']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--stripe-kib", type=int, default=None,
                        help="Default: k x 256 KiB, the plugin's stripe.")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = os.urandom(args.mib * MIB)
    coding = erasure.Coding(args.k, args.n)
    baseline = throughput(lambda: hashlib.sha256(data).digest(), len(data), args.rounds)
    stripe = args.stripe_kib * 1024 if args.stripe_kib else args.k * PIECE
    coded = throughput(lambda: code_stripes(data, coding, stripe), len(data), args.rounds)
    encoded = throughput(lambda: code_stripes(data, coding, stripe, False), len(data),
                         args.rounds)
    cid = throughput(lambda: unixfs.file_cid(data), len(data), args.rounds)
    results = {"mib": args.mib, "stripe_kib": stripe // 1024, "k": args.k, "n": args.n,
               "segment": SEGMENT,
               "rounds": args.rounds, "sha256_mib_s": round(baseline, 1),
               "coding_mib_s": round(coded, 1), "ratio": round(coded / baseline, 2),
               "encode_mib_s": round(encoded, 1), "encode_ratio": round(encoded / baseline, 2),
               "cid_mib_s": round(cid, 1), "cid_ratio": round(cid / baseline, 2)}
    output.emit(results, args.json, table)


if __name__ == "__main__":
    main()
