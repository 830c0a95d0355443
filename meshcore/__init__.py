"""Pure definitions shared by meshd and meshctl.

Nothing here imports trio, grpc or libp2p, so that meshctl can use it and stay
a thin client: the genesis document and Network ID, default paths, the version.
"""
