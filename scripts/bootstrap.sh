#!/usr/bin/env bash
# Installs everything the product and its tests need on a fresh Debian / Raspberry Pi OS
# machine: the Debian packages below and a virtualenv (.venv) with the project in it.
# Safe to run any number of times: it installs only what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

# Real parts the system and its tests stand on (see docs and ../shared/DESIGN.md).
DEBIAN_PACKAGES=(
  python3-venv python3-dev build-essential
  mosquitto                                   # MQTT broker (station and central)
  pcscd vsmartcard-vpcd libpcsclite-dev swig  # PC/SC stack, virtual reader; pyscard build deps
  socat                                       # pseudo-terminals for device simulators
  chromium fonts-noto-cjk                     # kiosk browser and Japanese glyphs
  postgresql                                  # central store at scale
  systemd                                     # systemd-analyze for unit checks
  nftables iproute2                           # appliance firewall rules, tested in network namespaces
  poppler-utils                               # pdftotext, pdfinfo: the printed reports are checked in tests
  open-jtalk open-jtalk-mecab-naist-jdic      # audio ballot in Japanese (the HTS voice: docs/booth.md)
  espeak-ng alsa-utils                        # audio ballot in English; aplay plays it to the headphones
  sox                                         # the audio tests measure the speech files
)

need=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
if ((${#need[@]})); then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Japanese audio ballot's HTS voice: no bookworm package ships one (scripts/fetch_hts_voice.py).
if ! compgen -G "/usr/share/hts-voice/*/*.htsvoice" >/dev/null && [[ ! -e /usr/local/share/hts-voice/mei/mei_normal.htsvoice ]]; then
  $SUDO python3 "$ROOT/scripts/fetch_hts_voice.py"
fi
# Debian starts these on install; the product and its tests start their own instances.
for svc in mosquitto pcscd postgresql; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

PY="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  echo "bootstrap: installing the project and its Python dependencies"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e "$ROOT[dev]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
