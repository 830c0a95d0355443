from __future__ import annotations

import os
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.properties import load_profile

load_profile()

# meshctl keeps the capabilities of sealed files for its user
# (meshctl/capabilities.py): never in the home of whoever runs the tests.
os.environ["MESH_CAPABILITIES"] = str(
    Path(tempfile.mkdtemp(prefix="mesh-capabilities-")) / "capabilities.json")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failure inside trio nurseries nests ExceptionGroups deeper than Python
    prints (max_group_depth 10): the error itself went missing from reports
    (a make test run lost two failures that way). Add each leaf exception,
    with its own traceback, as a section of the report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.excinfo is None or not isinstance(call.excinfo.value, BaseExceptionGroup):
        return
    text = "\n".join("".join(traceback.format_exception(leaf))[-4000:]
                     for leaf in _leaves(call.excinfo.value))
    report.sections.append(("leaf exceptions of the exception group", text))
