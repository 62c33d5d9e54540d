#!/bin/bash
# Prepare this machine for the fabns test suite (Debian 12, run as root). Idempotent and quiet;
# a re-run on a prepared machine takes about a second.
#   - Debian packages: OpenSSH (never started as a service), busybox-static for container root
#     filesystems, uidmap (newuidmap/newgidmap), sudo, util-linux (unshare, nsenter, setpriv)
#   - test users: alice (no sudo), bob (sudo with password), carol (sudo NOPASSWD), each with
#     its own /etc/subuid and /etc/subgid range
#   - .venv in the repository root with fabns installed editable, plus the dev extras
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
say() { printf 'install.sh: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root"; exit 1; }

# ---------------------------------------------------------------------------------- packages
PACKAGES=(openssh-server openssh-client busybox-static uidmap sudo procps util-linux mount passwd
          coreutils python3 python3-venv python3-pip git ca-certificates)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
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

# ---------------------------------------------------------------------------------- users
# name  subordinate id start  (each range is 65536 ids; alice's is what the containers expect)
USERS=("alice 100000" "bob 165536" "carol 231072")
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
for user in root alice carol; do
  case "$(getent shadow "$user" | cut -d: -f2)" in
    '!' | '!!' | '!*') usermod -p '*' "$user" ;;
  esac
done
echo 'bob:fabns-test-password' | chpasswd

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
