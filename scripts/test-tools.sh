#!/usr/bin/env bash
# Debian packages some tests need: systemd (systemd-analyze verifies the unit), prometheus (promtool
# checks /metrics), and those of discovery and the fleet test below. Installed with apt-get when missing
# and running as root; otherwise say what to install.
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)  # the gateway's shared state (tests/redis_server.py)
# Target discovery and the fleet test (docs/fleet.md): a DNS server, etcd and etcdctl, ip netns.
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v ip >/dev/null || need+=(iproute2)
((${#need[@]})) || exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "tests need: ${need[*]} (Debian packages); install them with apt-get, then run make test again" >&2
    exit 1
fi
