"""How every bench script ends: its figures as JSON for scripts, or as a table.

Import it as ``output`` (``python bench/x.py`` puts ``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def emit(results: Any, as_json: bool, table: Callable[[Any], None]) -> None:
    """Print ``results``: indented JSON with ``--json``, else ``table(results)``."""
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        table(results)
