"""The p2p layer: the only package of Mesh that imports libp2p."""

from meshd.p2p.upstream import autotls_standin

# Before anything below imports libp2p: py-libp2p's AutoTLS client is 10 MiB
# of RSS per daemon that meshd never runs (upstream/autotls_standin.py).
autotls_standin.install()


def import_libp2p() -> None:
    """Import py-libp2p now.

    Importing it detaches the ``libp2p`` logger (docs/py-libp2p.md#trap-15), so
    meshd's log configuration imports it first and re-attaches the logger after.
    """
    import libp2p  # noqa: F401
