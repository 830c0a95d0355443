#!/usr/bin/env bash
# `make run`: a local network of 4 meshd processes under $DEV_DIR (default
# .mesh/testnet): node-0 and 3 peers, every one a validator with tokens, the
# storage plugin, 10-s epochs, so rewards are minted within the first minute.
# `meshctl testnet up` does the work (docs/cli.md); the genesis, identities
# and data are kept, so a second `make run` restarts the same network.
# Ctrl-C stops every node; `make clean` (or rm -rf .mesh) starts afresh.
set -euo pipefail
DEV_DIR=${DEV_DIR:-.mesh/testnet}
BIN=${BIN:-.venv/bin}
exec "$BIN/meshctl" testnet up -n 4 --plugin storage --epoch-seconds 10 --dir "$DEV_DIR" \
    --foreground
