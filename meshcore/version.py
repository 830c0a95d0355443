"""The version of Mesh (daemon, CLI and API contract ship together)."""

__version__ = "0.1.0"
