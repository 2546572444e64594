#!/usr/bin/env bash
# tunnel-cost.sh's idle-tunnel figure with TLS on either side, beside the
# plain figure from the same run:
#   plain: ws:// client, ws:// upstream; tls-upstream: wss:// backend;
#   tls-listener: wss:// client to a TLS listener (certificate made with
#   openssl), ws:// upstream. For each: a fresh wsgate, N tunnels opened
#   through it, one message each, held idle, pinged, closed; RSS of wsgate.
# Usage: bench/tunnel-cost-tls.sh [tunnels]   (default 2000; loopback only)
# SIZE (default 32768) is the one message each tunnel carries first.
# Output: one JSON line per kind (wsload -mode hold's, with "target":
# "wsgate-plain", "wsgate-tls-upstream" or "wsgate-tls-listener").
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

# The listener's certificate, for 127.0.0.1, from a CA made now.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=bench CA" -keyout "$tmp/gwca.key" -out "$tmp/gwca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$tmp/gw.key" -out "$tmp/gw.csr" 2>/dev/null
openssl x509 -req -in "$tmp/gw.csr" -CA "$tmp/gwca.pem" -CAkey "$tmp/gwca.key" -CAcreateserial -days 1 \
  -extfile <(printf "subjectAltName=IP:127.0.0.1") -out "$tmp/gw.crt" 2>/dev/null

for kind in plain tls-upstream tls-listener; do
  upstream="{servers: [{address: 127.0.0.1:$PLAIN_PORT}]}"
  listener="{address: 127.0.0.1:$GW_PORT}"
  url="ws://127.0.0.1:$GW_PORT/"
  case "$kind" in
  tls-upstream)
    upstream="{tls: {enabled: true, ca_file: $tmp/ca.pem}, servers: [{address: 127.0.0.1:$TLS_PORT}]}" ;;
  tls-listener)
    listener="{address: 127.0.0.1:$GW_PORT, tls: {certificates: [{cert_file: $tmp/gw.crt, key_file: $tmp/gw.key}]}}"
    url="wss://127.0.0.1:$GW_PORT/" ;;
  esac
  cat > "$tmp/wsgate.yaml" <<YAML
listeners: [$listener]
routes: [{path: /, upstream: echo}]
upstreams: {echo: $upstream}
YAML
  "$tmp/wsgate" -config "$tmp/wsgate.yaml" >/dev/null 2>"$tmp/wsgate-$kind.err" &
  GW_PID=$!
  "$tmp/wsload" -mode wait -ca "$tmp/gwca.pem" -url "$url" -timeout 10s
  "$tmp/wsload" -mode hold -ca "$tmp/gwca.pem" -target "wsgate-$kind" -url "$url" \
    -conns "$N" -size "$SIZE" -pids "$GW_PID"
  kill "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
done
