"""meshd's replacements and wrappers of py-libp2p 0.8.1 internals.

Each module here stands in for, or wraps, a part of py-libp2p that is wrong or
too slow for Mesh, and names the upstream behaviour it works around (see
docs/py-libp2p.md): the Noise handshake (noise), the yamux muxer (yamux),
gossipsub's per-peer outbound queues (gossip_queues), its signed peer records
(peer_records), and the members-only host that DHT and gossipsub are given
(hostview). Mesh's own protocols live one level up, in meshd/p2p.
"""
