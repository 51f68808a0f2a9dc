#!/usr/bin/env bash
# flash.sh — provision one booth terminal and flash its companion board.
# The work is done by appliance/provision.py and appliance/selftest.py; see docs/provisioning.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: flash.sh --terminal ID --ca CA_DIR --election PACKAGE --data-dir DIR [options]

Provision ONE booth terminal:
  1. device key       Ed25519, created in DIR/device/ (the private key never leaves it)
  2. certificate      issued by the station CA in CA_DIR for a CSR signed by that key
  3. election package copied to DIR/election, its sha256 recorded in DIR/config.json
  4. configuration    DIR/config.json
  5. companion board  firmware copied with mpremote, read back by sha256, board restarted
  6. self-test        board reachable with the right firmware, certificates, clock, election

Options:
  --terminal ID       terminal id, used as certificate CN and MQTT user name (e.g. T01)
  --ca DIR            station CA directory (ca.pem, ca.key, crl.pem)
  --election PATH     election package (a file or a directory)
  --data-dir DIR      the terminal's data directory (e.g. /var/lib/polling-station)
  --board PORT        companion board serial port (e.g. /dev/ttyACM0); omit for none
  --broker HOST:PORT  station MQTT broker (default station-hub.local:8883)
  --dry-run           print what would be done; write nothing, do not touch the board
  --no-selftest       skip the self-test at the end
  -h, --help          this text

Safe to run again: steps already done are reported as "unchanged".
Exit status: 0 provisioned and self-test passed, 1 a step or the self-test failed, 2 usage.
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

args=()
data_dir=""
board=""
dry_run=0
selftest=1
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1; args+=("$1") ;;
    --no-selftest) selftest=0 ;;
    --terminal|--ca|--election|--data-dir|--board|--broker)
      (($# >= 2)) || { echo "flash.sh: $1 needs a value (see --help)" >&2; exit 2; }
      [[ "$1" == --data-dir ]] && data_dir="$2"
      [[ "$1" == --board ]] && board="$2"
      args+=("$1" "$2"); shift ;;
    *) echo "flash.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ ! -x "$PYTHON" ]]; then
  echo "flash.sh: no Python environment at $PYTHON — run scripts/bootstrap.sh first" >&2
  exit 1
fi
cd "$ROOT"
# -P: the product, and the firmware and pin map it flashes (importlib.resources), come from the
# packages installed for $PYTHON (PYTHON=/opt/polling-station/venv/bin/python on a booth), never
# from the checkout that happens to be the working directory.
if ! "$PYTHON" -P -m appliance.provision "${args[@]}"; then
  exit 1
fi
if ((dry_run)); then
  echo "flash: would run the self-test"
  exit 0
fi
if ((selftest)); then
  selftest_args=(--data-dir "$data_dir")
  [[ -n "$board" ]] && selftest_args+=(--board "$board")
  "$PYTHON" -P -m appliance.selftest "${selftest_args[@]}" || exit 1
fi
