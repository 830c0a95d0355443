"""meshd: the Mesh daemon (one trio process: p2p host, API, and later ledger,
governance, tasks and plugins)."""
