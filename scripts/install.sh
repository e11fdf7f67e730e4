#!/usr/bin/env bash
# Install one thanthien role on this machine (Raspberry Pi OS Bookworm / Debian 12).
#
#   sudo scripts/install.sh --role station|kiosk|speaker [options]
#   make install ROLE=speaker [INSTALL_ARGS="--dry-run"]
#
# What it does, in order (each step is idempotent, so running it again upgrades):
#   1. Debian packages the role needs (apt-get; skip with --no-apt)
#   2. the role's system user (thanthien, or thanthien-kiosk for the kiosk) and its groups
#   3. /etc/thanthien, /var/lib/thanthien/<role>, PREFIX (default /opt/thanthien)
#   4. a copy of this source tree in PREFIX/src and a venv in PREFIX/venv with ONLY the
#      role's Python dependencies: pip install 'PREFIX/src[<role>]'
#   5. /etc/thanthien/<role>.toml from config/<role>.example.toml (an existing one is never touched;
#      the station also gets fleet.toml for the technician's tools)
#   6. the systemd unit, the journald limits (and for the station the Mosquitto drop-in),
#      then enables the unit (not started: edit the config first)
#
# Options:
#   --role ROLE       station, kiosk or speaker (required)
#   --prefix DIR      where the venv and the source copy go (default /opt/thanthien)
#   --destdir DIR     stage everything under DIR instead of /; nothing on the live system is
#                     changed (no user, no chown, no apt, no systemctl). For inspection and tests.
#   --dry-run         print the plan (every command) and change nothing
#   --no-apt          do not install Debian packages
#   --wheelhouse DIR  install Python packages from DIR only (an offline install from a USB stick:
#                     fill it beforehand with `pip download` / `pip wheel` on a machine of the same kind)
#   --pip-args ARGS   more arguments for pip install (one string, split on spaces)
#   --python EXE      the Python that creates the venv (default python3; ≥ 3.11)
#
# Lines starting with "+" are commands run (or, with --dry-run, that would run); lines
# starting with "~" are steps skipped under --destdir.
set -euo pipefail

ROLE=""
PREFIX=/opt/thanthien
DESTDIR=""
DRY_RUN=0
APT=1
PYTHON=python3
PIP_ARGS=()
SRC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE="${2:-}"; shift 2 ;;
    --role=*) ROLE="${1#*=}"; shift ;;
    --prefix) PREFIX="${2:-}"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --destdir) DESTDIR="${2:-}"; shift 2 ;;
    --destdir=*) DESTDIR="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-apt) APT=0; shift ;;
    --wheelhouse) PIP_ARGS+=(--no-index --find-links "${2:-}"); shift 2 ;;
    --pip-args) read -r -a extra <<<"${2:-}"; PIP_ARGS+=("${extra[@]}"); shift 2 ;;
    --python) PYTHON="${2:-}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# Per role: the pip extra, the service user, its supplementary groups, Debian packages.
# The station box is also where the technician works, so it gets the fleet tools too
# (`thanthien fleet ping`, `enrol`; their extra is only qrcode + Pillow).
case "$ROLE" in
  speaker)
    EXTRAS=speaker; SVC_USER=thanthien; SVC_GROUPS="audio gpio"
    APT_PACKAGES=(python3-venv python3-dev gcc portaudio19-dev libportaudio2 alsa-utils) ;;
  station)
    EXTRAS=station,fleet; SVC_USER=thanthien; SVC_GROUPS=""
    APT_PACKAGES=(python3-venv python3-dev gcc portaudio19-dev mosquitto mosquitto-clients espeak-ng sqlite3) ;;
  kiosk)
    EXTRAS=kiosk; SVC_USER=thanthien-kiosk; SVC_GROUPS="video input render gpio audio"
    APT_PACKAGES=(python3-venv python3-dev gcc portaudio19-dev cage libmtdev1 libgl1 libgl1-mesa-dri
                  espeak-ng alsa-utils fonts-dejavu-core) ;;
  "") usage >&2; die "--role is required" ;;
  *) die "unknown role '$ROLE' (station, kiosk or speaker)" ;;
esac
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
if [ -n "$DESTDIR" ]; then
  if [ "$DRY_RUN" = 0 ]; then mkdir -p "$DESTDIR" || die "cannot create $DESTDIR"; fi
  DESTDIR="$(cd "$DESTDIR" 2>/dev/null && pwd || echo "$DESTDIR")"
fi
if [ "$DRY_RUN" = 0 ] && [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or use --dry-run / --destdir"
fi

D="$DESTDIR"
UNIT="thanthien-$ROLE.service"
VENV="$PREFIX/venv"
CONFIG="/etc/thanthien/$ROLE.toml"
STATE="/var/lib/thanthien/$ROLE"

say() { echo "== $*"; }
show() { printf '+'; printf ' %q' "$@"; echo; }
# run: a command on the staged tree (under DESTDIR when given)
run() { show "$@"; if [ "$DRY_RUN" = 0 ]; then "$@"; fi; }
# run_sh: the same for a pipeline or a redirection
run_sh() { echo "+ $1"; if [ "$DRY_RUN" = 0 ]; then bash -c "$1"; fi; }
# system: a change to the live system (users, ownership, apt, systemctl); not under --destdir
system() {
  if [ -n "$DESTDIR" ]; then printf '~ skipped (--destdir):'; printf ' %q' "$@"; echo; else run "$@"; fi
}

echo "thanthien install: role $ROLE, extras [$EXTRAS], prefix $PREFIX${DESTDIR:+, destdir $DESTDIR}$([ "$DRY_RUN" = 1 ] && echo ', dry run')"

say "1. Debian packages"
if [ "$APT" = 1 ]; then
  system apt-get update -q
  system env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
else
  echo "  (--no-apt: make sure these are installed: ${APT_PACKAGES[*]})"
fi

say "2. user $SVC_USER"
for g in $SVC_GROUPS; do
  if ! getent group "$g" >/dev/null; then system groupadd --system "$g"; fi
done
if ! getent passwd "$SVC_USER" >/dev/null; then
  system useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
    --comment "thanthien $ROLE" "$SVC_USER"
fi
if [ -n "$SVC_GROUPS" ]; then system usermod --append --groups "${SVC_GROUPS// /,}" "$SVC_USER"; fi

say "3. directories"
run install -d -m 0755 "$D$PREFIX" "$D/etc/thanthien"
run install -d -m 0750 "$D$STATE"
system chown "$SVC_USER:$SVC_USER" "$STATE"

say "4. source copy and venv with [$EXTRAS] only"
SOURCES="pyproject.toml README.md thanthien devices broadcast kiosk config systemd docs scripts"
run rm -rf "$D$PREFIX/src.new"
run install -d -m 0755 "$D$PREFIX/src.new"
run_sh "tar -C $(printf %q "$SRC_ROOT") --exclude=__pycache__ --exclude='*.pyc' -cf - $SOURCES | tar -C $(printf %q "$D$PREFIX/src.new") -xf -"
run rm -rf "$D$PREFIX/src"
run mv "$D$PREFIX/src.new" "$D$PREFIX/src"
if [ ! -x "$D$VENV/bin/python" ]; then
  run "$PYTHON" -m venv "$D$VENV"
fi
run "$D$VENV/bin/pip" install --quiet --disable-pip-version-check ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} \
  "$D$PREFIX/src[$EXTRAS]"

say "5. configuration $CONFIG"
if [ -e "$D$CONFIG" ]; then
  echo "  kept the existing $D$CONFIG (never overwritten; compare with $PREFIX/src/config/$ROLE.example.toml)"
else
  run install -m 0640 "$SRC_ROOT/config/$ROLE.example.toml" "$D$CONFIG"
  system chown "root:$SVC_USER" "$CONFIG"
fi
if [ "$ROLE" = station ]; then  # the technician's tools run on the station box
  if [ -e "$D/etc/thanthien/fleet.toml" ]; then
    echo "  kept the existing $D/etc/thanthien/fleet.toml"
  else
    run install -m 0640 "$SRC_ROOT/config/fleet.example.toml" "$D/etc/thanthien/fleet.toml"
    system chown "root:$SVC_USER" /etc/thanthien/fleet.toml
  fi
fi

say "6. systemd"
run install -d -m 0755 "$D/etc/systemd/system" "$D/etc/systemd/journald.conf.d"
run_sh "sed 's#/opt/thanthien#$PREFIX#g' $(printf %q "$SRC_ROOT/systemd/$UNIT") > $(printf %q "$D/etc/systemd/system/$UNIT")"
run install -m 0644 "$SRC_ROOT/systemd/journald.conf.d/thanthien.conf" "$D/etc/systemd/journald.conf.d/thanthien.conf"
if [ "$ROLE" = station ]; then
  run install -d -m 0755 "$D/etc/systemd/system/mosquitto.service.d"
  run install -m 0644 "$SRC_ROOT/systemd/mosquitto.service.d/thanthien.conf" \
    "$D/etc/systemd/system/mosquitto.service.d/thanthien.conf"
fi
system systemctl daemon-reload
system systemctl restart systemd-journald.service
system systemctl enable "$UNIT"
if [ "$ROLE" = station ]; then system systemctl enable mosquitto.service; fi
if [ "$ROLE" = kiosk ]; then system systemctl set-default graphical.target; fi

cat <<EOF
== done. Next:
  1. edit $CONFIG (site, ids, broker address; see $PREFIX/src/docs/deploy-$ROLE.md)
  2. $VENV/bin/thanthien config check $ROLE $CONFIG
  3. systemctl start $UNIT && journalctl -u $UNIT -f
EOF
