#!/usr/bin/env bash
# The main job: installs what is missing, then runs a whole election on this machine and
# verifies its public record from scratch. Today that is the election core's end-to-end run
# (key ceremony, sealed ballots with challenges, tally, threshold decryption, verification);
# the station hub, booth terminals and central gateway join it as their issues land.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
BALLOTS="${BALLOTS:-200}"
RECORD="${RECORD:-out/record-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$(dirname "$RECORD")"
echo "== election: ceremony, $BALLOTS ballots on 3 terminals, tally, decryption by 3 of 5 trustees"
.venv/bin/election simulate --ballots "$BALLOTS" --out "$RECORD"
echo "== independent verification of $RECORD"
.venv/bin/election verify "$RECORD"
