"""The ledger inside the daemon: storage, replication and the API's side of it.

The rules live in meshcore/ledger (pure); this package does the I/O.
"""
