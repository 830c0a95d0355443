"""Fuzz a node's REST/JSON gateway from its own OpenAPI document (schemathesis).

    python -m tests.e2e.gateway_fuzz URL CA_FILE TOKEN_FILE VALID BROKEN

Every operation gets up to VALID requests generated from its schema and BROKEN
that break it (schemathesis' positive and negative modes; the same ones each
run, random ones under ``make soak``; a request with no fields has few valid
forms, so hypothesis stops early there), with the token, and
a deadline (``Connect-Timeout-Ms``) so that a call which waits by design (a task
with a long timeout) is bounded. Prints one JSON object: cases per operation,
status codes seen, and every failure: a 5xx other than a deadline the client
set, an error body that is not ``{"code", "message"}``, or no answer at all.
Run by tests/e2e/test_http_fuzz.py in a network namespace of its own.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

DEADLINE_MS = 3000
PROFILE = os.environ.get("MESH_HYPOTHESIS_PROFILE", "ci")  # soak: random cases


@dataclass
class Fuzzer:
    url: str
    session: requests.Session
    headers: dict[str, str]
    examples: dict[GenerationMode, int]
    cases: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def fuzz(self, operation: Any, mode: GenerationMode) -> None:
        streams = "text/event-stream" in json.dumps(operation.definition.raw["responses"])

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=self.examples[mode], deadline=None, database=None,
                  phases=[Phase.generate], derandomize=PROFILE != "soak",
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            self.send(case, streams)

        run()

    def send(self, case: Any, streams: bool) -> None:
        label = f"{case.method} {case.path}"
        self.cases[label] += 1
        request = case.as_transport_kwargs(base_url=self.url.rstrip("/"), headers=self.headers)
        try:
            # stream=True: a stream's status and headers, without waiting for its end.
            response = self.session.request(**request, timeout=30, stream=True)
        except requests.RequestException as exc:
            self.failures.append({"operation": label, "error": repr(exc),
                                  "curl": case.as_curl_command()})
            return
        with response:
            self.statuses[response.status_code] += 1
            problem = _problem(response, streams)  # reads no stream's body
        if problem:
            self.failures.append({"operation": label, "status": response.status_code,
                                  "problem": problem, "curl": case.as_curl_command()})


def main(url: str, ca: str, token_file: str, valid: int, broken: int) -> dict[str, Any]:
    token = Path(token_file).read_text(encoding="utf-8").strip()
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override the test's CA
    session.verify = ca
    document = session.get(f"{url}openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    fuzzer = Fuzzer(url, session, {"authorization": f"Bearer {token}",
                                   "connect-timeout-ms": str(DEADLINE_MS)},
                    {GenerationMode.POSITIVE: valid, GenerationMode.NEGATIVE: broken})
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzer.fuzz(result.ok(), mode)
    operations = [f"{method.upper()} {path}" for path, methods in document["paths"].items()
                  for method in methods]
    return {"operations": operations, "cases": dict(fuzzer.cases),
            "statuses": {str(k): v for k, v in sorted(fuzzer.statuses.items())},
            "failures": fuzzer.failures[:50], "failure_count": len(fuzzer.failures)}


def _problem(response: requests.Response, streaming: bool) -> str:
    status = response.status_code
    if status == 200:
        expected = "text/event-stream" if streaming else "application/json"
        kind = response.headers.get("content-type", "")
        if not kind.startswith(expected):
            return f"200 with content-type {kind!r}"
        return "" if streaming else _json_object(response.content)
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"an error body that is not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"code", "message"}:
        return f"an error body that is not {{code, message}}: {body!r}"
    if status >= 500 and not (status == 504 and body["code"] == "deadline_exceeded"):
        return f"server error: {body}"
    return ""


def _json_object(content: bytes) -> str:
    try:
        return "" if isinstance(json.loads(content), dict) else "a body that is not an object"
    except ValueError:
        return f"a 200 body that is not JSON: {content[:200]!r}"


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                          int(sys.argv[5]))))
