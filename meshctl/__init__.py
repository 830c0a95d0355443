"""meshctl: the command-line client of meshd, built only on the gRPC API.

It never imports meshd, trio or libp2p (tests/unit/test_import_boundaries.py).
"""
