"""A RUN task's payload and result, as bytes: what requester and provider agree on.

Pure (no meshd, no wasmtime): meshctl builds payloads and reads results with it.

Payload: a JSON header line, then the module's bytes, then the input::

    {"v": 1, "fn": "run", "fuel": 1000000, "module": "<SHA-256 hex>",
     "module_bytes": 1234}\\n<module><input>

or, for a module stored with ``meshctl storage put`` (a provider reads it
from its storage plugin, checked against the CID, and keeps it compiled),
the header names it and only the input follows::

    {"v": 1, "fn": "run", "fuel": 1000000, "module_cid": "bafk..."}\\n<input>

Result: a JSON header line, then the output::

    {"fuel": 117, "error": "", "message": ""}\\n<output>

``error`` is "" (the run returned an output), ``"out_of_fuel"`` or
``"trapped"``, with wasmtime's message; either way ``fuel`` is what the run
spent, and what it is paid for. The result is deterministic: honest
providers of one module, input and fuel return the same bytes, so redundant
results are compared by digest (docs/tasks.md §4). A module that cannot run
at all (malformed, importing anything) is no result: the provider refuses it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TypeGuard

VERSION = 1
FN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
FILE_CID = re.compile(r"baf[a-z2-7]{20,120}")  # a stored file's CIDv1 in base32
MAX_HEADER = 4096  # bytes of a header line
DEFAULT_FUEL = 100_000_000  # per run, unless the requester asks for less (a provider's ceiling)
MAX_PAYLOAD = 1 << 20  # a task's payload, module and input with their header (docs/tasks.md)
FUEL_PER_UNIT = 1000  # a receipt's units are thousands of fuel spent (at least 1)
ERRORS = ("", "out_of_fuel", "trapped")


class RunFormatError(ValueError):
    """Bytes that are not a RUN payload or result; the message says why."""


@dataclass(frozen=True)
class RunRequest:
    module: bytes  # binary Wasm or WebAssembly text; b"" when module_cid names it
    data: bytes  # the input
    fn: str = "run"
    fuel: int = DEFAULT_FUEL
    module_cid: str = ""  # a file in the storage plugin, instead of the module's bytes

    def encode(self) -> bytes:
        header: dict[str, object] = {"v": VERSION, "fn": self.fn, "fuel": self.fuel}
        if self.module_cid:
            header["module_cid"] = self.module_cid
            return json.dumps(header, sort_keys=True).encode() + b"\n" + self.data
        header |= {"module": hashlib.sha256(self.module).hexdigest(),
                   "module_bytes": len(self.module)}
        return json.dumps(header, sort_keys=True).encode() + b"\n" + self.module + self.data

    @property
    def module_key(self) -> str:
        """What names the module, for a cache of compiled modules: its CID, or its SHA-256."""
        return self.module_cid or hashlib.sha256(self.module).hexdigest()


@dataclass(frozen=True)
class RunResult:
    fuel: int
    output: bytes = b""
    error: str = ""  # one of ERRORS
    message: str = ""

    def encode(self) -> bytes:
        header = {"error": self.error, "fuel": self.fuel, "message": self.message}
        return json.dumps(header, sort_keys=True).encode() + b"\n" + self.output

    @property
    def units(self) -> int:
        return units_of(self.fuel)


def units_of(fuel: int) -> int:
    """A receipt's units for ``fuel`` spent: thousands of fuel, at least 1."""
    return max(1, -(-fuel // FUEL_PER_UNIT))


def parse_request(payload: bytes) -> RunRequest:
    header, module_and_input = _header(payload, "RUN payload")
    fn, fuel, digest, size = (header.get("fn"), header.get("fuel"), header.get("module"),
                              header.get("module_bytes"))
    if header.get("v") != VERSION:
        raise RunFormatError(f"a RUN payload of version {header.get('v')!r}; this node reads "
                             f"version {VERSION}")
    if not isinstance(fn, str) or not FN.fullmatch(fn):
        raise RunFormatError(f"fn {fn!r} is not an export name (letters, digits, _)")
    if not _whole(fuel) or fuel < 1:
        raise RunFormatError(f"fuel {fuel!r} is not a whole number of at least 1")
    if "module_cid" in header:
        cid = header["module_cid"]
        if not isinstance(cid, str) or not FILE_CID.fullmatch(cid):
            raise RunFormatError(f"module_cid {cid!r} is not a stored file's CID (bafy..., "
                                 "as `meshctl storage put` prints it)")
        if digest is not None or size is not None:
            raise RunFormatError("a RUN payload names its module by CID or carries it, "
                                 "not both")
        return RunRequest(b"", module_and_input, fn, fuel, module_cid=cid)
    if not _whole(size) or not 0 < size <= len(module_and_input):
        raise RunFormatError(f"module_bytes {size!r} does not fit the payload")
    module = module_and_input[:size]
    if digest != hashlib.sha256(module).hexdigest():
        raise RunFormatError("the module's SHA-256 is not the one its header names")
    return RunRequest(module, module_and_input[size:], fn, fuel)


def parse_result(result: bytes) -> RunResult:
    header, output = _header(result, "RUN result")
    fuel, error, message = header.get("fuel"), header.get("error"), header.get("message")
    if not _whole(fuel) or fuel < 0:
        raise RunFormatError(f"fuel {fuel!r} is not a whole number")
    if error not in ERRORS or not isinstance(message, str):
        raise RunFormatError(f"error {error!r} is not one of {', '.join(map(repr, ERRORS))}")
    if error and output:
        raise RunFormatError("a run that failed has no output")
    return RunResult(fuel, output, error, message)


def _header(raw: bytes, what: str) -> tuple[dict[str, object], bytes]:
    line, newline, rest = raw.partition(b"\n")
    if not newline or len(line) > MAX_HEADER:
        raise RunFormatError(f"a {what} starts with a JSON header line")
    try:
        header = json.loads(line)
    except ValueError:
        raise RunFormatError(f"a {what}'s header is not JSON") from None
    if not isinstance(header, dict):
        raise RunFormatError(f"a {what}'s header is not a JSON object")
    return header, rest


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
