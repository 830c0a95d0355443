"""How many cases the property tests run, and whether they are random.

Two hypothesis profiles, chosen by ``MESH_HYPOTHESIS_PROFILE``:

* ``ci`` (the default: ``make test`` and CI): derandomized, so a landing runs
  the same cases every time and a green suite stays green;
* ``soak`` (``make soak``): ``SOAK_FACTOR`` times the examples, random seeds,
  to find new cases. Pin each one it finds with ``@example`` (see
  tests/replay.py for tests that draw with ``st.data()``).

Seeded simulations (tests/unit/test_consensus_sim.py) take their seeds from
:func:`seeds` for the same reason.
"""

from __future__ import annotations

import os
import random

from hypothesis import settings

SOAK_FACTOR = 20
PROFILE = os.environ.get("MESH_HYPOTHESIS_PROFILE", "ci")


def load_profile() -> None:
    """Register both profiles and load the chosen one (from tests/conftest.py)."""
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    settings.register_profile("soak", max_examples=100 * SOAK_FACTOR, deadline=None,
                              print_blob=True)
    if PROFILE not in ("ci", "soak"):
        raise ValueError(f"MESH_HYPOTHESIS_PROFILE={PROFILE!r}: use 'ci' or 'soak'")
    settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``max_examples`` for a test that runs ``n`` in CI (slow tests run fewer)."""
    return n * SOAK_FACTOR if PROFILE == "soak" else n


def seeds(n: int, pinned: tuple[int, ...] = ()) -> list[int]:
    """The seeds of a seeded simulation: ``pinned`` (cases a soak found), then
    0..n-1 in CI, or under soak ``SOAK_FACTOR`` times as many from a random
    start. A failure names its seed: pin it by adding it to ``pinned``."""
    if PROFILE != "soak":
        return [*pinned, *range(n)]
    start = random.SystemRandom().randrange(n, 2**32)
    return [*pinned, *range(start, start + n * SOAK_FACTOR)]
