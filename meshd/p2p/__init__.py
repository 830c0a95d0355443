"""The p2p layer: the only package of Mesh that imports libp2p."""
