"""The task protocol's pure logic: task identities and the claims both parties sign.

docs/tasks.md §3.
"""
