#!/usr/bin/env bash
# `make run`: a single-node development network under $DEV_DIR (default .mesh/dev).
# The genesis is created once and kept, so the network ID and the node's
# identity survive restarts; `make clean` (or rm -rf .mesh) starts afresh.
set -euo pipefail
DEV_DIR=${DEV_DIR:-.mesh/dev}
BIN=${BIN:-.venv/bin}
GENESIS=$DEV_DIR/genesis.toml
DATA=$DEV_DIR/node
SOCKET=$(realpath -m "$DATA/meshd.sock")

if [ ! -f "$GENESIS" ]; then
    "$BIN/meshctl" network init --name DevNet --token-name "Dev Token" --token-symbol DEV \
        --token-distribution uptime:40,tasks:40,governance:20 --out "$DEV_DIR" >/dev/null
fi
echo "Mesh development network $("$BIN/meshctl" --json network inspect "$GENESIS" \
    | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["network_id"])')"
echo "  genesis:  $GENESIS"
echo "  data:     $DATA"
echo "  API:      unix:$SOCKET"
echo "Talk to it from another terminal:"
echo "  $BIN/meshctl --socket $SOCKET status"
echo "Ctrl-C stops it."
echo
exec "$BIN/meshd" run --genesis "$GENESIS" --data-dir "$DATA" --socket "$SOCKET" \
    --listen /ip4/127.0.0.1/tcp/0
