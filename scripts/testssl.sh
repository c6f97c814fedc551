#!/usr/bin/env bash
# testssl.sh against an lbd HTTPS listener on loopback: the default security policy
# (ELBSecurityPolicy-TLS13-1-2-2021-06), a certificate made by `lbd cert request` (cryptography, RSA 2048),
# a real target behind it. Installs the Debian package testssl.sh when missing (as root, with apt-get).
# Scans 127.0.0.1 only. Prints testssl's report, then the findings above INFO/OK.
#
#   scripts/testssl.sh            # from the repository, after `make venv`
#   scripts/testssl.sh -S         # extra arguments go to testssl (here: server defaults only)
#   PYTHON=/path/to/python scripts/testssl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

if ! command -v testssl >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends testssl.sh >/dev/null
    else
        echo "testssl.sh is not installed: apt-get install testssl.sh (Debian), then run this again" >&2
        exit 1
    fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
    # Only what this script started, by process id.
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
target=$(free_port)
admin=$(free_port)

"$PYTHON" -m lbd cert request --store "$work/store" --name site --domain localhost --key-type rsa >/dev/null
mkdir -p "$work/www" && echo "hello from the target" >"$work/www/index.html"
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$work/www" "$target" >"$work/target.log" 2>&1 &
pids+=($!)

cat >"$work/lbd.yaml" <<EOF
node: {zone: zone-a, workers: 1}
admin: {listen: "127.0.0.1:$admin"}
certificates: {store: "$work/store"}
load_balancers:
  - name: web
    type: application
    listeners:
      - protocol: HTTPS
        address: 127.0.0.1
        port: $port
        certificates: [site]
        default_actions: [{type: forward, target_group: web}]
target_groups:
  - name: web
    protocol: HTTP
    health_check: {enabled: false}
    targets: [{id: 127.0.0.1, port: $target}]
EOF
"$PYTHON" -m lbd run -c "$work/lbd.yaml" >"$work/lbd.log" 2>&1 &
pids+=($!)

# Ready when the admin API says so (not after a fixed sleep).
for _ in $(seq 300); do
    if "$PYTHON" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$admin/readyz', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/lbd.log" >&2; exit 1; }
    sleep 0.1
done

version=$(testssl --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 -oE 'testssl +[0-9][^ ]*' || true)
echo "${version:-testssl} against lbd on 127.0.0.1:$port"
# --ip one: this address only (no DNS); --sneaky: no testssl User-Agent in the target's logs;
# --warnings off: no interactive questions.
testssl --quiet --color 0 --warnings off --ip one --sneaky --jsonfile "$work/findings.json" "$@" "127.0.0.1:$port" || true

echo
echo "== findings above INFO/OK =="
"$PYTHON" - "$work/findings.json" <<'EOF'
import json, sys

findings = json.load(open(sys.argv[1]))
order = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "WARN"]
shown = [f for f in findings if f.get("severity") in order]
for finding in sorted(shown, key=lambda f: order.index(f["severity"])):
    print(f"{finding['severity']:8} {finding['id']}: {finding['finding']}")
if not shown:
    print("none")
EOF

echo
echo "== lbd's side =="
"$PYTHON" - "$admin" <<'EOF'
import json, sys, urllib.request

stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/stats", timeout=5))
listener = stats["listeners"][0]
print(
    "handshakes refused, counted in lbd_client_tls_negotiation_errors_total: "
    f"{listener['client_tls_negotiation_errors']}; connections served: {listener['new_connections']}"
)
EOF
echo "\"TLS handshake failed\" lines in lbd's log: $(grep -c 'TLS handshake failed' "$work/lbd.log" || true)"
grep -E "Traceback| error " "$work/lbd.log" || echo "no errors or tracebacks in lbd's log"
