"""py-libp2p's records reach meshd's handler, whenever libp2p is imported."""

from __future__ import annotations

import json
import subprocess
import sys

# A fresh interpreter: in this one libp2p is already imported by other tests,
# which would hide the bug (configure ran, then `import libp2p` detached its
# logger again: docs/py-libp2p.md#trap-15, and its lines went to stderr bare,
# unfiltered).
SCRIPT = """
import io, logging, sys
from meshd import logs
buffer = io.StringIO()
logs.configure("info", "json", buffer)
import libp2p.network.swarm  # what the daemon imports later
logging.getLogger("libp2p.network.swarm").warning("from libp2p")
logging.getLogger("libp2p.kad_dht").error("Failed to read DHT message from stream: x")
logging.getLogger("libp2p.kad_dht.kad_dht").warning("Value not found for key plugin/maps/x")
logging.getLogger("libp2p.host.basic_host").error(
    "Failed to open stream to peer 12D3KooWx:\\n  Error: protocols not supported: tried x")
logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer 12D3KooWy: eof")
# A module that sets its own level (auto_connector: INFO) follows libp2p's WARNING.
logging.getLogger("libp2p.network.auto_connector").info("initiating 100 new dials")
sys.stdout.write(buffer.getvalue())
"""


def test_libp2p_records_go_through_meshd_handler_and_filter() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60, check=True)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["logger"], r["msg"]) for r in records] == [
        # the DHT noise and unserved protocols are filtered (docs/py-libp2p.md#trap-18)
        ("libp2p.network.swarm", "from libp2p"),
        ("libp2p.host.basic_host", "Failed to open stream to peer 12D3KooWy: eof")]
    assert "from libp2p" not in result.stderr
