"""The p2p layer: the only package of Mesh that imports libp2p."""


def import_libp2p() -> None:
    """Import py-libp2p now.

    Importing it detaches the ``libp2p`` logger (docs/py-libp2p.md#trap-15), so
    meshd's log configuration imports it first and re-attaches the logger after.
    """
    import libp2p  # noqa: F401
