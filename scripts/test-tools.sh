#!/usr/bin/env bash
# Debian packages some tests need: systemd (systemd-analyze verifies the unit) and prometheus (promtool
# checks /metrics). Installed with apt-get when missing and running as root; otherwise say what to install.
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)  # the gateway's shared state (tests/redis_server.py)
((${#need[@]})) || exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "tests need: ${need[*]} (Debian packages); install them with apt-get, then run make test again" >&2
    exit 1
fi
