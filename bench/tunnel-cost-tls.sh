#!/usr/bin/env bash
# tunnel-cost.sh's idle-tunnel figure with the upstream side over TLS
# (wss:// backend), beside the plain figure from the same run:
#   for upstream in plain tls: a fresh wsgate, N tunnels opened through it,
#   one message each, held idle, pinged, closed; RSS of wsgate alone.
# Usage: bench/tunnel-cost-tls.sh [tunnels]   (default 2000; loopback only)
# SIZE (default 32768) is the one message each tunnel carries first.
# Output: one JSON line per upstream kind (wsload -mode hold's, with
# "target": "wsgate-plain-upstream" or "wsgate-tls-upstream").
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
SIZE="${SIZE:-32768}"
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

go build -o "$tmp/wsgate" ./cmd/wsgate
go build -o "$tmp/wsload" ./bench/wsload

read -r PLAIN_PORT TLS_PORT GW_PORT <<<"$("$tmp/wsload" -mode ports -n 3)"
"$tmp/wsload" -mode server -listen "127.0.0.1:$PLAIN_PORT" 2>/dev/null &
"$tmp/wsload" -mode server -listen "127.0.0.1:$TLS_PORT" -tls-ca "$tmp/ca.pem" 2>/dev/null &

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}
wait_port "$PLAIN_PORT"
wait_port "$TLS_PORT"

for kind in plain tls; do
  if [ "$kind" = plain ]; then
    upstream="{servers: [{address: 127.0.0.1:$PLAIN_PORT}]}"
  else
    upstream="{tls: {enabled: true, ca_file: $tmp/ca.pem}, servers: [{address: 127.0.0.1:$TLS_PORT}]}"
  fi
  cat > "$tmp/wsgate.yaml" <<YAML
listeners: [{address: 127.0.0.1:$GW_PORT}]
routes: [{path: /, upstream: echo}]
upstreams: {echo: $upstream}
YAML
  "$tmp/wsgate" -config "$tmp/wsgate.yaml" >/dev/null 2>"$tmp/wsgate-$kind.err" &
  GW_PID=$!
  "$tmp/wsload" -mode wait -url "ws://127.0.0.1:$GW_PORT/" -timeout 10s
  "$tmp/wsload" -mode hold -target "wsgate-$kind-upstream" -url "ws://127.0.0.1:$GW_PORT/" \
    -conns "$N" -size "$SIZE" -pids "$GW_PID"
  kill "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
done
