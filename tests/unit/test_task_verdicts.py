"""The pure parts of the task router: the majority of redundant results, the
digest a verdict expects, and the ranking of providers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.wire.v1 import wire_pb2
from meshcore.tasks import claims, matching, verdicts

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_a_strict_majority_of_all_executions_wins() -> None:
    assert verdicts.majority([A, A, B], 3) == A
    assert verdicts.majority([A], 1) == A
    assert verdicts.majority([A, B], 2) is None  # a tie is no majority
    assert verdicts.majority([A, A, B, B], 4) is None
    assert verdicts.majority([A, B, C], 3) is None
    assert verdicts.majority([A, A], 3) is None  # one execution failed: nothing is judged
    assert verdicts.majority([], 0) is None


@given(st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=9))
def test_the_winner_is_returned_by_more_than_half(digests: list[bytes]) -> None:
    winner = verdicts.majority(digests, len(digests))
    if winner is not None:
        assert digests.count(winner) * 2 > len(digests)
    else:
        assert all(digests.count(d) * 2 <= len(digests) for d in digests)


def test_a_verdict_expects_the_majority_or_names_the_rejection() -> None:
    claim = b"signed claim bytes"
    assert verdicts.expected_digest(A, B, claim) == A  # outvoted
    assert verdicts.expected_digest(None, B, claim) == claims.rejected_digest(claim)
    # rejected by the plugin's rule although it agrees with the majority
    assert verdicts.expected_digest(A, A, claim) == claims.rejected_digest(claim)


def caps(*kinds: tuple[str, str], labels: tuple[str, ...] = (), running: int = 0,
         max_running: int = 4) -> wire_pb2.TaskCapabilities:
    return wire_pb2.TaskCapabilities(
        kinds=[wire_pb2.TaskKindRef(plugin=p, kind=k) for p, k in kinds],
        capabilities=labels, running=running, max_running=max_running)


def test_providers_are_matched_by_kind_and_labels_and_ranked_by_load() -> None:
    square = ("math", "square")
    advertised = [
        ("busy", caps(square, running=3)),
        ("idle", caps(square)),
        ("other-kind", caps(("math", "cube"))),
        ("gpu", caps(square, labels=("gpu",), running=1)),
        ("full", caps(square, running=1, max_running=0)),  # no slots: load 1/1
        ("tie", caps(square)),
    ]
    assert matching.rank_providers(advertised, "math", "square", ()) == \
        ["idle", "tie", "gpu", "busy", "full"]
    assert matching.rank_providers(advertised, "math", "square", ("gpu",)) == ["gpu"]
    assert matching.rank_providers(advertised, "storage", "square", ()) == []
