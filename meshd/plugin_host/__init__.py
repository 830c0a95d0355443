"""How meshd hosts plugins: loading entry points (loader), each plugin's
Context (context), running and restarting them (runtime, supervisor), and
external plugins over gRPC in their own processes (external, process).

What a plugin imports is meshd/plugin (the public plugin API); this package
is meshd's own and may change between versions.
"""
