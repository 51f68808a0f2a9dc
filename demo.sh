#!/usr/bin/env bash
# The main job: installs what is missing, then runs a whole election on this machine through
# the real parts (central gateway, station hub, three booths with virtual cards and scripted
# voters, tally, trustees' decryption) and verifies its public record from scratch.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
exec .venv/bin/polling-station-demo "$@"
