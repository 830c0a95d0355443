"""Mesh's distributed storage plugin (the whitepaper's storage example, for real)."""
