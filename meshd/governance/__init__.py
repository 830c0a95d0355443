"""Governance on this node: proposing and voting from its account, the API's
views of proposals (service), and the node's status kept in step (status_watch).

The rules live in meshcore/governance (pure); proposals and votes are ledger
entries, stored and replicated by meshd/ledger.
"""
