#!/usr/bin/env bash
# Measures wsgate's tunnel cost on loopback, in one run:
#   - echo round trips/s through wsgate vs direct to the echo server
#   - RSS per idle tunnel for N tunnels after one message each
# Usage: bench/tunnel-cost.sh [tunnels]   (default 5000; each costs 2 fds in
# wsgate and 1 in the load generator, so keep it under ulimit -n / 2)
# A quick wsgate-only check; `make bench` (bench/run.sh) is the full
# comparison with nginx and HAProxy. Output: one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5000}"
DUR="${DURATION:-5s}"
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

go build -o "$tmp/wsgate" ./cmd/wsgate
go build -o "$tmp/wsload" ./bench/wsload

read -r ECHO_PORT GW_PORT <<<"$("$tmp/wsload" -mode ports -n 2)"
cat > "$tmp/wsgate.yaml" <<YAML
listeners: [{address: 127.0.0.1:$GW_PORT}]
routes: [{path: /, upstream: echo}]
upstreams: {echo: {servers: [{address: 127.0.0.1:$ECHO_PORT}]}}
YAML

"$tmp/wsload" -mode server -listen "127.0.0.1:$ECHO_PORT" 2>/dev/null &
"$tmp/wsgate" -config "$tmp/wsgate.yaml" >/dev/null 2>"$tmp/wsgate.err" &
GW_PID=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$ECHO_PORT") 2>/dev/null && break
  sleep 0.1
done

for conns in ${CONNS:-1 64}; do
  "$tmp/wsload" -mode echo -target direct -url "ws://127.0.0.1:$ECHO_PORT/" -conns "$conns" -size 64 -duration "$DUR"
  "$tmp/wsload" -mode echo -target wsgate -url "ws://127.0.0.1:$GW_PORT/" -conns "$conns" -size 64 -duration "$DUR"
done
"$tmp/wsload" -mode hold -target wsgate -url "ws://127.0.0.1:$GW_PORT/" -conns "$N" -size 32768 -pids "$GW_PID"
