#!/usr/bin/env bash
# flash.sh — provision one booth terminal from its station package and flash its companion board.
# The work is done by appliance/provision.py and appliance/selftest.py; see docs/provisioning.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: flash.sh --package FILE --terminal ID --data-dir DIR (--board PORT | --no-board)
                --reader KIND [reader options] [--certificate FILE] [options]

Provision ONE booth terminal from the station package its hub exported
(`station-hub export-package HUB_DIR station-package.json`):

  0. check            every input first: the package, the terminal id (the package must list
                      it), the data directory (no election swap while the outbox holds
                      ballots), the certificate, the reader settings, the board. A bad input
                      stops here with nothing written.
  1. device key       Ed25519, made here in DIR/device/ (the private key never leaves it)
  2. certificate      first run: writes DIR/device/request.csr and exits 3 — take it to the hub:
                        station-hub enroll HUB_DIR request.csr ID.pem
                      then run flash.sh again with --certificate ID.pem to install it
  3. station trust    station CA, its CRL, the roll's public key (DIR/device/)
  4. card trust       JPKI issuing CAs and CRLs (DIR/card/)
  5. outbox           an EMPTY outbox of a previous election is moved aside
  6. election package DIR/election, its sha256 recorded in DIR/config.json
  7. configuration    DIR/config.json (site settings such as ui_port or timeouts are kept)
  8. companion board  firmware copied with mpremote, read back by sha256, board restarted
  9. self-test        everything `booth run` needs is there and valid; board answers

Options:
  --package FILE      station package from the hub
  --terminal ID       terminal id, one the station package lists (e.g. T01)
  --data-dir DIR      the terminal's data directory (e.g. /var/lib/polling-station/booth)
  --certificate FILE  the certificate `station-hub enroll` issued for this terminal's request
  --board PORT        companion board serial port (e.g. /dev/ttyACM0); kept on a re-run
  --no-board          training terminals only: no companion board (no keypad, NO tamper switch)
  --reader KIND       pcsc | pn532-uart | pn532-i2c | pn532-spi; kept on a re-run
  --reader-port PORT  pn532-uart: its serial port (e.g. /dev/serial0)
  --reader-name NAME  pcsc: the reader's PC/SC name (default: the first reader)
  --reader-address A  pn532-i2c: I2C address (default: the pin map's, 0x24)
  --broker HOST:PORT  override the station broker address from the package
  --dry-run           print what would be done; write nothing, do not touch the board
  --no-selftest       skip the self-test at the end
  -h, --help          this text

Safe to run again: steps already done are reported as "unchanged".
Exit status: 0 provisioned and self-test passed; 1 an input, a step or the self-test failed;
2 usage; 3 provisioned but waiting for the certificate (enrol the request, re-run).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

args=()
data_dir=""
dry_run=0
selftest=1
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--no-board) [[ "$1" == --dry-run ]] && dry_run=1; args+=("$1") ;;
    --no-selftest) selftest=0 ;;
    --package|--terminal|--data-dir|--certificate|--board|--reader|--reader-port|--reader-name|--reader-address|--broker)
      (($# >= 2)) || { echo "flash.sh: $1 needs a value (see --help)" >&2; exit 2; }
      [[ "$1" == --data-dir ]] && data_dir="$2"
      args+=("$1" "$2"); shift ;;
    *) echo "flash.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$data_dir" ]] || { echo "flash.sh: --data-dir is required (see --help)" >&2; exit 2; }

if [[ ! -x "$PYTHON" ]]; then
  echo "flash.sh: no Python environment at $PYTHON — run scripts/bootstrap.sh first" >&2
  exit 1
fi
cd "$ROOT"
# -P: the product, and the firmware and pin map it flashes (importlib.resources), come from the
# packages installed for $PYTHON (PYTHON=/opt/polling-station/venv/bin/python on a booth), never
# from the checkout that happens to be the working directory.
status=0
"$PYTHON" -P -m appliance.provision "${args[@]}" || status=$?
case "$status" in
  0) ;;
  3) echo "flash: self-test skipped until the certificate is installed"; exit 3 ;;
  2) exit 2 ;;
  *) exit 1 ;;
esac
if ((dry_run)); then
  echo "flash: would run the self-test"
  exit 0
fi
if ((selftest)); then
  echo "flash: [self-test] checking that the booth can run"
  "$PYTHON" -P -m appliance.selftest --data-dir "$data_dir" || exit 1
fi
