#!/bin/bash
# Prepare this machine for the fabns test suite (Debian 12, run as root). Idempotent and quiet;
# a re-run on a prepared machine takes about a second.
#   - Debian packages: OpenSSH (never started as a service), busybox-static for container root
#     filesystems, uidmap (newuidmap/newgidmap), sudo, util-linux (unshare, nsenter, setpriv)
#   - test users: alice (no sudo), bob (sudo with password), carol (sudo NOPASSWD), dave (no
#     sudo, fish as login shell), each with its own /etc/subuid and /etc/subgid range
#   - .venv in the repository root with fabns installed editable, plus the dev extras
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
say() { printf 'install.sh: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root"; exit 1; }

# ---------------------------------------------------------------------------------- packages
PACKAGES=(openssh-server openssh-client busybox-static uidmap sudo procps util-linux mount passwd
          coreutils python3 python3-venv python3-pip git ca-certificates)
# container engines for the test beds (tests/testbeds.py): LXC, machined + nspawn (and the system/user D-Bus they
# need), Podman with runc (crun refuses this hybrid cgroup layout) and catatonit (the rootless
# pause process; only a Recommends of podman); netcat for ProxyCommand into a network namespace
PACKAGES+=(lxc lxc-templates systemd-container dbus dbus-user-session podman runc catatonit
           netcat-openbsd fish)
# tests/test_attacks.py builds a small shared object (a hostile container's LD_PRELOAD)
PACKAGES+=(gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  # without systemd as PID 1, a system bus started by hand (SystemBus in tests/testbeds.py) would let
  # apt's hooks D-Bus-activate packagekitd and polkitd, which then die with it: stop it first
  if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] && [ -S /run/dbus/system_bus_socket ] \
    && [ -s /run/dbus/pid ] && kill -0 "$(cat /run/dbus/pid)" 2>/dev/null; then
    say "a system D-Bus (PID $(cat /run/dbus/pid)) runs without systemd; stop it, then re-run"
    exit 1
  fi
  # keep maintainer scripts from starting services (the system sshd on port 22) on hosts
  # without a policy of their own; ours is removed again whatever happens
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p /run/sshd && chmod 755 /run/sshd

# ---------------------------------------------------------------------------------- podman
# settings that work here, for root and rootless users alike: runc (crun refuses hybrid cgroups
# while cgroup2 lists hugetlb), cgroupfs (no systemd PID 1), events to a file (no journald),
# rlimits no higher than what conmon inherits (no CAP_SYS_RESOURCE). Someone else's file is
# left alone; ours goes into the drop-in folder instead.
PODMAN_CONF_MARK='# written by fabns scripts/install.sh'
PODMAN_CONF=/etc/containers/containers.conf
if [ -e "$PODMAN_CONF" ] && ! head -1 "$PODMAN_CONF" | grep -qF "$PODMAN_CONF_MARK"; then
  PODMAN_CONF=/etc/containers/containers.conf.d/50-fabns.conf
fi
tmp=$(mktemp)
cat > "$tmp" <<EOF
$PODMAN_CONF_MARK (tests/testbeds.py)
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
events_logger = "file"
cgroup_manager = "cgroupfs"
EOF
if ! cmp -s "$tmp" "$PODMAN_CONF"; then
  mkdir -p "$(dirname "$PODMAN_CONF")"
  install -m 0644 -o root -g root "$tmp" "$PODMAN_CONF"
fi
rm -f "$tmp"

# ---------------------------------------------------------------------------------- users
# name  subordinate id start  (each range is 65536 ids; alice's is what the containers expect)
USERS=("alice 100000" "bob 165536" "carol 231072" "dave 296608")
for entry in "${USERS[@]}"; do
  read -r user start <<<"$entry"
  if ! id "$user" >/dev/null 2>&1; then
    # no automatic subordinate range: ours is written below, so it is always the same one
    useradd -m -s /bin/bash -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$user"
  fi
  for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -q "^$user:" "$f" || echo "$user:$start:65536" >> "$f"
  done
done
# sshd with UsePAM no refuses key logins to accounts whose password field starts with '!'
# ("locked"); '*' still allows no password. Only bare locks are replaced, never a hash.
for user in root alice carol dave; do
  case "$(getent shadow "$user" | cut -d: -f2)" in
    '!' | '!!' | '!*') usermod -p '*' "$user" ;;
  esac
done
echo 'bob:fabns-test-password' | chpasswd
# dave logs in with fish, a login shell that is not POSIX sh (fabns must not care)
[ "$(getent passwd dave | cut -d: -f7)" = /usr/bin/fish ] || usermod -s /usr/bin/fish dave

SUDOERS=/etc/sudoers.d/fabns-test
tmp=$(mktemp)
cat > "$tmp" <<'EOF'
# fabns test users (written by fabns scripts/install.sh)
Defaults:bob !lecture, timestamp_timeout=0
bob ALL=(ALL:ALL) ALL
carol ALL=(ALL:ALL) NOPASSWD: ALL
EOF
if ! cmp -s "$tmp" "$SUDOERS"; then
  visudo -cqf "$tmp" >/dev/null
  install -m 0440 -o root -g root "$tmp" "$SUDOERS"
fi
rm -f "$tmp"

# ---------------------------------------------------------------------------------- venv
pick_python() {
  local py
  for py in "$(command -v python3 || true)" /usr/bin/python3; do
    [ -n "$py" ] && [ -x "$py" ] || continue
    "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
      2>/dev/null && { echo "$py"; return; }
  done
  say "no python3 >= 3.11 with venv and ensurepip"; exit 1
}
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  rm -rf .venv
  "$(pick_python)" -m venv .venv
fi
stamp=".venv/.fabns-install"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -V 2>&1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
  || ! .venv/bin/python -c 'import importlib.metadata as m; m.version("fabns"); import fabric, pytest' \
    2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
