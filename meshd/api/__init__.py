"""The gRPC API of meshd: server, trio bridge, one thin servicer per service."""
