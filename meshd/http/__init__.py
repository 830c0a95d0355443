"""The HTTP listener: a REST/JSON gateway over the gRPC servicers, and the dashboard.

Built from proto/'s descriptors, not one handler per RPC (docs/http.md): every
method of the API is ``POST /<package.Service>/<Method>`` with the request as
protobuf's canonical JSON (the Connect protocol's unary JSON form), reads are
also ``GET``, and server streams are Server-Sent Events. It runs on the API
thread's asyncio loop, calling the same servicer objects as gRPC.
"""
