"""The token ledger's pure logic: entries, validity, state (docs/ledger.md).

No I/O, no clock, no randomness: storage, replication and time live in meshd.
"""
