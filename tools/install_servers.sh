#!/usr/bin/env bash
# Installs the real servers the tests start (redis-server, mosquitto, from the distribution) when missing.
# Idempotent and quiet; runs as root, or through sudo when there is sudo and we are not root.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The broker lives in /usr/sbin, which is not on every user's PATH.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "install_servers: not root and no sudo: install ${missing[*]} by hand" >&2
    exit 1
  fi
fi

"${as_root[@]}" apt-get update -qq >/dev/null
# policy-rc.d or no init system: the package's own service may not start, and the tests need it not to.
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
