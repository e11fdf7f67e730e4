#!/usr/bin/env bash
# Install the Debian packages thanthien needs, only those missing; apt-get update only
# when something must be installed. Uses sudo when not root. Idempotent and quick.
set -euo pipefail
packages=(
  python3-venv python3-dev          # venv + headers for PyAudio on a stock Debian python
  mosquitto mosquitto-clients       # private broker for tests and the demo
  nats-server                       # second broker (MQTT listener): portability tests
  portaudio19-dev                   # PyAudio builds against it
  alsa-utils                        # aplay/amixer for speaker nodes
  espeak-ng                         # offline Vietnamese speech
  sox lame                          # audio checks in tests; MP3 encoding for test media
  xvfb xauth libmtdev1              # Kivy under a virtual screen
  libgl1 libgl1-mesa-dri            # OpenGL (Mesa) that Kivy renders with, on a Pi and under Xvfb
  chromium                          # console tests (driven by Playwright, never downloaded)
  systemd                           # systemd-analyze verifies the unit files
)
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "ensure-system-packages: not a Debian system; install these yourself: ${packages[*]}" >&2
  exit 0
fi
missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "ensure-system-packages: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
