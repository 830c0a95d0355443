"""Root CIDs (mesh_storage/unixfs.py) are the reference implementation's, byte for byte.

The reference is npm's ipfs-unixfs-importer (js-ipfs and Helia's importer), run
with `ipfs add --cid-version=1`'s options (tests/reference/unixfs/cid.mjs,
installed by `make setup` from its lock file). Sizes cover one raw block, the
chunk boundary, a one-level tree and a two-level tree (over 174 chunks).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from mesh_storage.unixfs import CHUNK, MAX_LINKS, file_cid

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "unixfs"
SIZES = (0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7,
         MAX_LINKS * CHUNK + 3 * CHUNK + 5)


def reference_cids(paths: list[Path]) -> list[str]:
    result = subprocess.run(["node", str(REFERENCE / "cid.mjs"), *map(str, paths)],
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def test_root_cids_match_ipfs_unixfs_importer(tmp_path: Path) -> None:
    rng = random.Random(7)
    files = {}
    for size in SIZES:
        path = tmp_path / f"{size}.bin"
        path.write_bytes(rng.randbytes(size))
        files[path] = file_cid(path.read_bytes())
    assert list(files.values()) == reference_cids(list(files))
    # One raw block is its own root; more are a dag-pb tree.
    assert files[tmp_path / f"{CHUNK}.bin"].startswith("bafkrei")
    assert files[tmp_path / f"{CHUNK + 1}.bin"].startswith("bafybei")


@pytest.mark.parametrize("text,cid", [
    # Known CIDs: `ipfs add --cid-version=1` of these bytes.
    (b"hello", "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"),
    (b"", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
])
def test_known_cids(text: bytes, cid: str) -> None:
    assert file_cid(text) == cid
