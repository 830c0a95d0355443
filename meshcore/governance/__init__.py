"""Governance's pure logic (docs/governance.md): the validity of proposals and
votes (rules), the tally (tally), and what a settlement does with them (settle).

No I/O, no clock, no randomness, like meshcore/ledger: every node must reach
the same outcome from the same entries.
"""
