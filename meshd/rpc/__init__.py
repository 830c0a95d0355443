"""gRPC on trio: the bridge between grpc.aio's thread and trio (bridge), and
the one place where domain errors become status codes (status).

Shared by the user API (meshd/api) and the plugin host's server for external
plugins (meshd/plugin_host/grpc_server.py); it knows nothing of either.
"""
