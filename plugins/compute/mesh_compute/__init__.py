"""Mesh's edge compute template (docs/compute.md)."""
