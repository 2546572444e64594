#!/usr/bin/env bash
# bench/run.sh (`make bench`): wsgate side by side with nginx and HAProxy,
# and with no proxy at all ("direct"), in one run on loopback, reported as
# medians with their min-max range, ratios, and the proxy's CPU time per
# operation in bench/results/ (latest.md, latest.json, ratios.svg, raw.jsonl).
#
# Every proxy gets the same two echo upstreams (wsload -mode server), the
# same round robin, the same 1h timeouts and an access log to /dev/null (wsgate
# always logs, so the others do too), a plain listener and a TLS 1.3 one with
# the same ECDSA P-256 certificate (made with openssl at the start). Only one
# proxy runs at a time, and it and the upstreams are started fresh for each
# target and round, so one's leftovers cannot slow another. Each round runs
# the targets in a different order (wsgate nginx haproxy direct, then nginx
# haproxy direct wsgate, ...), so a slow stretch of the machine does not
# always fall on the same one.
#
# CPU per operation is the proxy's own CPU time (utime + stime of every
# thread of its processes, nginx's master and workers included, from
# /proc/PID/stat) over the measurement, divided by the operations done.
#
# Environment:
#   BENCH_RUNS      rounds; the report gives the median and min-max of each figure (3)
#   BENCH_HOLD      idle tunnels held in the hold test (9000; lowered to fit the fd limit)
#   BENCH_HOLD_TLS  idle wss:// tunnels held in the TLS hold test (2000; same limit)
#   BENCH_DURATION  length of each echo/bulk/handshake measurement (3s); wrk runs 5s
#   BENCH_OUT       where the results go (bench/results)
#   BENCH_ONLY      workloads to run, by name (say "handshake_16 wss_hold"); all when empty
#
# Needs root only to apt-get install nginx-light, haproxy and wrk when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-3}"
HOLD="${BENCH_HOLD:-9000}"
HOLD_TLS="${BENCH_HOLD_TLS:-2000}"
DUR="${BENCH_DURATION:-3s}"
OUT="${BENCH_OUT:-bench/results}"
START="$(date +%s)"

log() { printf 'bench %s [%3ss] %s\n' "$(date +%T)" "$(($(date +%s) - START))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_tools installs what is missing with apt-get. The packages' services
# must not start (they would take port 80 and outlive the benchmark), so a
# policy-rc.d that forbids starting services is in place during the install;
# an existing one (Docker images ship one) is left as it is.
install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "missing ${missing[*]}; run as root so apt-get can install them, or install them yourself"
  log "installing ${missing[*]} with apt-get"
  local ours=0 rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# written by wsgate bench/run.sh for the duration of an install\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    ours=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Try without a package list refresh first: it is the slow part and
  # usually not needed.
  { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }; } || rc=$?
  if ((ours)); then rm -f /usr/sbin/policy-rc.d; fi
  ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}
install_tools
PATH="$PATH:/usr/sbin"
NGINX="$(command -v nginx)"
HAPROXY="$(command -v haproxy)"

tmp="$(mktemp -d /tmp/wsgate-bench.XXXXXX)"
# nginx workers drop root for nobody; they must be able to reach their temp dirs.
chmod 755 "$tmp"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The hold test needs 2 fds per tunnel in the proxy (client + upstream side),
# 1 in wsload and 1/2 in each echo server. Children inherit this limit; a few
# hundred fds stay free for listeners, logs, epoll and pipes.
hard="$(ulimit -Hn)"
notes="$tmp/notes.txt"
: >"$notes"
if [[ "$hard" != unlimited ]]; then
  ulimit -n "$hard"
  maxhold=$(((hard - 400) / 2))
  if ((HOLD > maxhold)); then
    log "BENCH_HOLD=$HOLD needs $((2 * HOLD + 400)) fds in the proxy, the limit is $hard: holding $maxhold"
    echo "idle hold lowered from $HOLD to $maxhold tunnels: the proxy needs 2 fds per tunnel and the open-files limit is $hard" >>"$notes"
    HOLD="$maxhold"
  fi
  if ((HOLD_TLS > maxhold)); then
    echo "idle wss hold lowered from $HOLD_TLS to $maxhold tunnels: the open-files limit is $hard" >>"$notes"
    HOLD_TLS="$maxhold"
  fi
fi

log "building wsgate, wsload and report into $tmp"
go build -o "$tmp/wsgate" ./cmd/wsgate
go build -o "$tmp/wsload" ./bench/wsload
go build -o "$tmp/report" ./bench/report
WSLOAD="$tmp/wsload"

read -r UP1 UP2 UPTLS PORT_WSGATE PORT_NGINX PORT_HAPROXY TLS_WSGATE TLS_NGINX TLS_HAPROXY \
  <<<"$("$WSLOAD" -mode ports -n 9)"
declare -A PORT=([direct]="$UP1" [wsgate]="$PORT_WSGATE" [nginx]="$PORT_NGINX" [haproxy]="$PORT_HAPROXY")
# "direct" over TLS is a third echo upstream that speaks TLS itself (Go's
# crypto/tls): the figure without a proxy in between.
declare -A TLSPORT=([direct]="$UPTLS" [wsgate]="$TLS_WSGATE" [nginx]="$TLS_NGINX" [haproxy]="$TLS_HAPROXY")

# The proxies' TLS listeners share one self-signed ECDSA P-256 certificate
# for 127.0.0.1, made now; wsload does not check it (-insecure).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/openssl.err" ||
  { cat "$tmp/openssl.err" >&2; die "openssl could not make the benchmark certificate"; }
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

# The echo upstreams are restarted for every target: after a hold test they
# carry a big Go heap and thousands of dead goroutines' garbage, which would
# tax whichever target comes next.
UP_PIDS=()
start_upstreams() {
  local up
  for up in "$UP1" "$UP2"; do
    "$WSLOAD" -mode server -listen "127.0.0.1:$up" 2>>"$tmp/echo.log" &
    UP_PIDS+=("$!")
    PIDS+=("$!")
  done
  if [[ "$1" == direct ]]; then
    "$WSLOAD" -mode server -listen "127.0.0.1:$UPTLS" -tls-ca "$tmp/direct-ca.pem" 2>>"$tmp/echo.log" &
    UP_PIDS+=("$!")
    PIDS+=("$!")
  fi
}
stop_upstreams() {
  local p
  for p in "${UP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${UP_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  UP_PIDS=()
}

cat >"$tmp/wsgate.yaml" <<YAML
listeners:
  - address: 127.0.0.1:$PORT_WSGATE
  - address: 127.0.0.1:$TLS_WSGATE
    tls:
      min_version: "1.3"
      certificates:
        - cert_file: $tmp/cert.pem
          key_file: $tmp/key.pem
routes:
  - path: /
    upstream: echo
upstreams:
  echo:
    balance: round_robin
    servers:
      - address: 127.0.0.1:$UP1
      - address: 127.0.0.1:$UP2
timeouts:
  idle: 1h
  drain: 2s   # stopping between runs must not wait 30s for stragglers
YAML

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<NGINX
# The classic WebSocket reverse proxy block, tuned the way an operator who
# expects 10k idle tunnels would tune it.
worker_processes 2;
worker_rlimit_nofile 20000;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events {
    worker_connections 20000;
}
http {
    access_log /dev/null;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;

    # Upgrades get "Connection: upgrade"; plain requests get no Connection
    # header, so the upstream keepalive pool below is used.
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }
    upstream echo {
        server 127.0.0.1:$UP1;
        server 127.0.0.1:$UP2;
        keepalive 64;
    }
    server {
        # Same accept backlog as Go and HAProxy get from somaxconn.
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        include $tmp/nginx-location.conf;
    }
    server {
        listen 127.0.0.1:$TLS_NGINX ssl backlog=4096;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.3;
        # The suite Go picks on AES hardware; pinned on every proxy.
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        include $tmp/nginx-location.conf;
    }
}
NGINX
cat >"$tmp/nginx-location.conf" <<NGINX
location / {
    proxy_pass http://echo;
    proxy_http_version 1.1;
    proxy_set_header Upgrade \$http_upgrade;
    proxy_set_header Connection \$connection_upgrade;
    proxy_set_header Host \$host;
    proxy_set_header X-Real-IP \$remote_addr;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$host;
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
    proxy_buffer_size 16k;
    proxy_buffers 4 16k;
}
NGINX

cat >"$tmp/haproxy.cfg" <<HAPROXY
global
    nbthread 2
    maxconn 20000
    # maxconn 20000 asks for 40k fds (client + server side) and the hard
    # limit here is 20k; without this HAProxy refuses to start. The hold
    # test stays under 10k tunnels, i.e. under 20k fds.
    no strict-limits
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option forwardfor
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 10s
frontend fe
    bind 127.0.0.1:$PORT_HAPROXY
    default_backend echo
frontend fe_tls
    bind 127.0.0.1:$TLS_HAPROXY ssl crt $tmp/haproxy.pem ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256
    default_backend echo
backend echo
    balance roundrobin
    http-reuse safe
    server up1 127.0.0.1:$UP1
    server up2 127.0.0.1:$UP2
HAPROXY

# wrk prints its own summary; this hook adds one JSON line in wsload's shape.
cat >"$tmp/wrk.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"mode":"http","workload":"http_wrk","target":"%s","run":%d,"requests":%d,"seconds":%.3f,' ..
    '"req_per_s":%.1f,"p50_us":%d,"p99_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    os.getenv("BENCH_TARGET"), tonumber(os.getenv("BENCH_RUN")), summary.requests,
    summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect, e.read, e.write, e.status, e.timeout))
end
LUA

PROXY_PID=""
start_proxy() {
  local t="$1"
  case "$t" in
    direct) return 0 ;;
    wsgate) "$tmp/wsgate" -config "$tmp/wsgate.yaml" >/dev/null 2>>"$tmp/wsgate.err" & ;;
    # -e: the startup error log, before the config is read, must not go
    # to the system's /var/log/nginx.
    nginx) "$NGINX" -e "$tmp/nginx/error.log" -c "$tmp/nginx.conf" -g 'daemon off;' 2>>"$tmp/nginx/stderr.log" & ;;
    haproxy) "$HAPROXY" -f "$tmp/haproxy.cfg" -db >/dev/null 2>>"$tmp/haproxy.err" & ;;
  esac
  PROXY_PID="$!"
  PIDS+=("$PROXY_PID")
}

stop_proxy() {
  [[ -n "$PROXY_PID" ]] || return 0
  kill "$PROXY_PID" 2>/dev/null || true
  local _
  for _ in $(seq 50); do
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}

# ready waits until the target carries a WebSocket echo and GET /hello, on
# its plain and on its TLS listener.
ready() {
  local t="$1"
  "$WSLOAD" -mode wait -url "ws://127.0.0.1:${PORT[$t]}/" -timeout 15s &&
    "$WSLOAD" -mode wait -insecure -url "wss://127.0.0.1:${TLSPORT[$t]}/" -timeout 15s ||
    { tail -n 20 "$tmp"/*.err "$tmp"/nginx/*.log 2>/dev/null >&2 || true; die "$t did not come up"; }
}

RAW="$tmp/raw.jsonl"
: >"$RAW"
# measure runs one measurement, keeps its JSON line (a failure is recorded as
# a line with "error", the report lists it) and shows it as progress.
measure() {
  local out rc=0
  out="$("$@")" || rc=$?
  if [[ -n "$out" ]]; then
    printf '%s\n' "$out" >>"$RAW"
    log "  $out"
  fi
  if ((rc)); then log "  warning: exit status $rc; recorded as failed"; fi
}

# proxy_cpu prints the CPU seconds the proxy's processes have used so far
# (nothing for "direct").
proxy_cpu() {
  if [[ -n "$PROXY_PID" ]]; then "$WSLOAD" -mode cpu -pids "$PROXY_PID"; fi
}

# wrk_json runs wrk and prints its JSON line with the proxy's CPU seconds
# during the run added as "proxy_cpu_s" (as wsload adds them).
wrk_json() {
  local t="$1" r="$2" out line c0 c1
  c0="$(proxy_cpu)"
  out="$(BENCH_TARGET="$t" BENCH_RUN="$r" timeout 60 wrk -t2 -c64 -d5s -s "$tmp/wrk.lua" "http://127.0.0.1:${PORT[$t]}/hello" 2>&1)" || true
  c1="$(proxy_cpu)"
  if ! grep -q '^{' <<<"$out"; then
    printf '{"mode":"http","workload":"http_wrk","target":"%s","run":%d,"error":"wrk: %s"}\n' \
      "$t" "$r" "$(tr -d '"\\\n' <<<"$out" | cut -c1-200)"
    return 1
  fi
  line="$(grep -m1 '^{' <<<"$out")"
  if [[ -n "$c0" && -n "$c1" ]]; then
    line="${line%\}},\"proxy_cpu_s\":$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')}"
  fi
  printf '%s\n' "$line"
}

# hold restarts the proxy (so the per-tunnel figure does not depend on what
# the earlier workloads left in its heap) and holds idle tunnels through it.
hold() {
  local t="$1" workload="$2" url="$3" n="$4"
  shift 4
  stop_proxy
  start_proxy "$t"
  ready "$t"
  measure "$WSLOAD" -mode hold -workload "$workload" -target "$t" -run "$run" -url "$url" -conns "$n" -size 32768 \
    -hold 2s -settle 3s -pids "$PROXY_PID" "$@"
}

ORDER=(wsgate nginx haproxy direct)
# want reports whether the workload named $1 is to run (BENCH_ONLY).
want() { [[ -z "${BENCH_ONLY:-}" || " $BENCH_ONLY " == *" $1 "* ]]; }
log "echo upstreams on :$UP1 and :$UP2 (TLS :$UPTLS for direct); plain/TLS listeners: wsgate :$PORT_WSGATE/:$TLS_WSGATE, nginx :$PORT_NGINX/:$TLS_NGINX, haproxy :$PORT_HAPROXY/:$TLS_HAPROXY"
log "$RUNS rounds, ${DUR} per measurement, hold $HOLD tunnels ($HOLD_TLS over TLS)"
for run in $(seq "$RUNS"); do
  round=()
  for i in "${!ORDER[@]}"; do round+=("${ORDER[$(((run - 1 + i) % ${#ORDER[@]}))]}"); done
  echo "round $run ran ${round[*]}, in that order" >>"$notes"
  for t in "${round[@]}"; do
    log "round $run/$RUNS: $t"
    start_upstreams "$t"
    start_proxy "$t"
    ready "$t"
    url="ws://127.0.0.1:${PORT[$t]}/"
    wss="wss://127.0.0.1:${TLSPORT[$t]}/"
    L=(-target "$t" -run "$run")
    if [[ -n "$PROXY_PID" ]]; then L+=(-pids "$PROXY_PID"); fi
    want echo_1x64 && measure "$WSLOAD" -mode echo -workload echo_1x64 "${L[@]}" -url "$url" -conns 1 -size 64 -duration "$DUR"
    want echo_64x64 && measure "$WSLOAD" -mode echo -workload echo_64x64 "${L[@]}" -url "$url" -conns 64 -size 64 -duration "$DUR"
    want bulk_4x1m && measure "$WSLOAD" -mode bulk -workload bulk_4x1m "${L[@]}" -url "$url" -conns 4 -size 1048576 -duration "$DUR"
    want handshake_16 && measure "$WSLOAD" -mode handshake -workload handshake_16 "${L[@]}" -url "$url" -conns 16 -duration "$DUR"
    want http_wrk && measure wrk_json "$t" "$run"
    want wss_echo_64x64 && measure "$WSLOAD" -mode echo -workload wss_echo_64x64 "${L[@]}" -insecure -url "$wss" -conns 64 -size 64 -duration "$DUR"
    want wss_handshake_16 && measure "$WSLOAD" -mode handshake -workload wss_handshake_16 "${L[@]}" -insecure -url "$wss" -conns 16 -duration "$DUR"
    if [[ "$t" != direct ]]; then
      want hold && hold "$t" hold "$url" "$HOLD"
      want wss_hold && hold "$t" wss_hold "$wss" "$HOLD_TLS" -insecure
    fi
    stop_proxy
    stop_upstreams
  done
done

elapsed=$(($(date +%s) - START))
mkdir -p "$OUT"
cp "$RAW" "$OUT/raw.jsonl"
log "writing $OUT/latest.md, latest.json, ratios.svg (total ${elapsed}s)"
"$tmp/report" -in "$RAW" -out "$OUT" -nginx "$NGINX" -haproxy "$HAPROXY" -notes "$notes" -elapsed "${elapsed}s"
