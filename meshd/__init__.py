"""meshd: the Mesh daemon, one trio process: p2p host, ledger, governance, tasks,
plugins and the gRPC API. docs/architecture.md maps its packages."""
