#!/usr/bin/env bash
# Benchmarks godwit-proxy against a direct connection, nginx and haproxy (one worker each)
# in front of the same small HTTP/1.1 backend: wrk for HTTP/1.1, h2load for HTTP/2 (the
# proxies' h2c, prior knowledge). Prints req/s and p99 for each and the ratios to nginx.
# nginx and haproxy set the request headers godwit's proxy sets (Via, Fly-*, X-Forwarded-*),
# so every proxy does the same work; `h1:nginx-bare` is nginx setting only Host and
# X-Forwarded-For, for comparison.
# Needs: wrk, nginx, haproxy, h2load, nats-server
#   (apt-get install -y wrk nginx-light haproxy nghttp2-client nats-server).
# Usage: scripts/bench-proxy.sh [duration=10s] [connections=64] [wrk threads=2]
# Env: BENCH_BIN=<path> uses that bench-proxy binary (else it is built once, release);
#      H2_STREAMS=<n> concurrent streams per h2load connection (default 1);
#      PROXY_THREADS=<n> tokio workers of the proxy (default 1).
# With `perf` installed it also prints each proxy's CPU time per HTTP/1.1 request (task-clock
# of godwit's worker thread, nginx's worker process, haproxy's process during its wrk run).
# For every HTTP/1.1 run it also prints the whole VM's busy CPU time per request (all cores,
# from /proc/stat: client, proxy, backend and kernel together) and how often the proxy's
# worker was switched out per request (voluntary + involuntary, from /proc/*/status).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-64}
THREADS=${3:-2}
H2_STREAMS=${H2_STREAMS:-1}
SECONDS_=${DURATION%s}
for tool in wrk nginx haproxy h2load nats-server; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see the header of $0)" >&2; exit 1; }
done

BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/bench-proxy}
if [ -z "${BENCH_BIN:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p godwit-proxy --example bench-proxy
fi
WORK=$(mktemp -d /tmp/godwit-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url [curl flags]
  for _ in $(seq 1 100); do curl -sf "${@:2}" -H "Host: bench.apps.godwit.test" "$1" >/dev/null && return; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}

# The proxy and backend run until their stdin (fd 3's pipe) closes.
mkfifo "$WORK/stdin"
BENCH_THREADS=${PROXY_THREADS:-1} "$BIN" <"$WORK/stdin" >"$WORK/addrs" 2>"$WORK/bench.log" &
BENCH_PID=$!
PIDS+=($!)
exec 3>"$WORK/stdin"
for _ in $(seq 1 300); do grep -q proxy= "$WORK/addrs" 2>/dev/null && break; sleep 0.1; done
grep -q proxy= "$WORK/addrs" || { echo "bench-proxy did not start:" >&2; cat "$WORK/bench.log" >&2; exit 1; }
BACKEND=$(sed -n 's/.*backend=\([^ ]*\).*/\1/p' "$WORK/addrs")
PROXY=$(sed -n 's/.*proxy=\([^ ]*\).*/\1/p' "$WORK/addrs")

NGINX_PORT=$(free_port)
NGINX_H2_PORT=$(free_port)
NGINX_BARE_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx-error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  # The default (1000) closes client connections mid-run; h2load does not reconnect.
  keepalive_requests 100000000;
  upstream backend { server $BACKEND; keepalive 128; keepalive_requests 100000000; }
  # The same request headers godwit's proxy adds (handler/headers.rs), so both do the same
  # work and the backend parses the same heads.
  server {
    listen 127.0.0.1:$NGINX_PORT;
    listen 127.0.0.1:$NGINX_H2_PORT http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header Via "1.1 nginx";
      proxy_set_header Fly-Client-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-SSL off;
      proxy_set_header Fly-Forwarded-Port \$server_port;
      proxy_set_header Fly-Region ams;
      proxy_set_header Fly-Request-Id \$request_id-ams;
    }
  }
  # nginx as commonly configured: only Host and X-Forwarded-For.
  server {
    listen 127.0.0.1:$NGINX_BARE_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
PIDS+=($!)

HAPROXY_PORT=$(free_port)
HAPROXY_H2_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  bind 127.0.0.1:$HAPROXY_H2_PORT proto h2
  # The same request headers as godwit's proxy and the nginx server above.
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header Via "1.1 haproxy"
  http-request set-header Fly-Client-IP %[src]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-SSL off
  http-request set-header Fly-Forwarded-Port %[dst_port]
  http-request set-header Fly-Region ams
  http-request set-header Fly-Request-Id %[uuid]-ams
  default_backend backend
backend backend
  server backend $BACKEND
CONF
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=($!)

wait_http "http://$PROXY/"
wait_http "http://127.0.0.1:$NGINX_PORT/"
wait_http "http://127.0.0.1:$NGINX_BARE_PORT/"
wait_http "http://127.0.0.1:$HAPROXY_PORT/"
wait_http "http://127.0.0.1:$NGINX_H2_PORT/" --http2-prior-knowledge
wait_http "http://127.0.0.1:$HAPROXY_H2_PORT/" --http2-prior-knowledge
wait_http "http://$PROXY/" --http2-prior-knowledge

declare -A RPS P99 CPU VM SW
# What to measure with perf during each HTTP/1.1 run: godwit's worker thread (the first
# tokio-rt-worker; with more workers, the whole process), nginx's worker, haproxy.
perf_target() { # name
  case $1 in
    h1:godwit)
      if [ "${PROXY_THREADS:-1}" = 1 ]; then
        echo "-t $(ps -T -p "$BENCH_PID" -o spid=,comm= | awk '$2 == "tokio-rt-worker" {print $1; exit}')"
      else echo "-p $BENCH_PID"; fi ;;
    h1:nginx|h1:nginx-bare) echo "-p $(pgrep -P "$NGINX_PID" | head -1)" ;;
    h1:haproxy) echo "-p $HAPROXY_PID" ;;
  esac
}
# Context switches so far of what perf_target names (every thread of a process).
switches() { # perf_target output
  local files
  case $1 in
    -t*) files=("/proc/$BENCH_PID/task/${1#-t }/status") ;;
    -p*) files=(/proc/"${1#-p }"/task/*/status) ;;
  esac
  cat "${files[@]}" 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
# CPU time the whole VM has been busy (all cores, USER_HZ ticks): total minus idle and iowait.
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# wrk's latency ("850.00us", "5.85ms", "1.02s") in ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000} printf "%.2f", v}' <<<"$1"; }
h1() { # name url
  local out target stat="$WORK/perf-$1.txt" perf_pid=""
  target=$(perf_target "$1")
  if command -v perf >/dev/null && [ -n "$target" ]; then
    # shellcheck disable=SC2086
    perf stat -e task-clock $target -o "$stat" 2>/dev/null &
    perf_pid=$!
  fi
  local sw0="" busy0 reqs
  [ -n "$target" ] && sw0=$(switches "$target")
  busy0=$(busy_ticks)
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: bench.apps.godwit.test" "$2")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  VM[$1]=$(awk -v t="$(($(busy_ticks) - busy0))" -v r="$reqs" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {if (r > 0) printf "%.1f", t * 1e6 / hz / r}')
  if [ -n "$sw0" ]; then
    SW[$1]=$(awk -v s="$(($(switches "$target") - sw0))" -v r="$reqs" 'BEGIN {if (r > 0) printf "%.3f", s / r}')
  fi
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    CPU[$1]=$(awk -v reqs="$(awk '/requests in/ {print $1}' <<<"$out")" \
      '/task-clock/ {gsub(",", "", $1); if (reqs > 0) printf "%.1f", $1 * 1000 / reqs}' "$stat")
  fi
  RPS[$1]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P99[$1]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
}
h2() { # name url
  local out log="$WORK/h2load-$1.log"
  out=$(h2load -D "$SECONDS_" -c "$CONNS" -m "$H2_STREAMS" -t "$THREADS" --log-file="$log" \
    -H ":authority: bench.apps.godwit.test" "$2")
  grep -q "status codes: [1-9][0-9]* 2xx" <<<"$out" || { echo "h2load $1 got no 2xx:" >&2; echo "$out" >&2; exit 1; }
  RPS[$1]=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")
  # The log has one line per request; its third field is the latency in microseconds.
  P99[$1]=$(awk '{print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", v[i]/1000}')
}
row() { # name
  local ratio="" p99ratio=""
  case $1 in
    h1:*) base=${RPS[h1:nginx]:-}; pbase=${P99[h1:nginx]:-} ;;
    h2:*) base=${RPS[h2:nginx]:-}; pbase=${P99[h2:nginx]:-} ;;
  esac
  if [ -n "$base" ] && [ "$base" != 0 ]; then ratio=$(awk -v a="${RPS[$1]}" -v b="$base" 'BEGIN {printf "%.2fx", a/b}'); fi
  if [ -n "$pbase" ] && [ "$pbase" != 0.00 ]; then p99ratio=$(awk -v a="${P99[$1]}" -v b="$pbase" 'BEGIN {printf "%.2fx", a/b}'); fi
  printf '%-20s %10s %10s %14s %14s %12s %12s %12s\n' "$1" "${RPS[$1]}" "${P99[$1]}" "$ratio" "$p99ratio" \
    "${CPU[$1]:-}" "${VM[$1]:-}" "${SW[$1]:-}"
}

h1 h1:direct "http://$BACKEND/"
h1 h1:nginx "http://127.0.0.1:$NGINX_PORT/"
h1 h1:nginx-bare "http://127.0.0.1:$NGINX_BARE_PORT/"
h1 h1:haproxy "http://127.0.0.1:$HAPROXY_PORT/"
h1 h1:godwit "http://$PROXY/"
h2 h2:nginx "http://127.0.0.1:$NGINX_H2_PORT/"
h2 h2:haproxy "http://127.0.0.1:$HAPROXY_H2_PORT/"
h2 h2:godwit "http://$PROXY/"

echo "HTTP/1.1: wrk -t$THREADS -c$CONNS -d$DURATION; HTTP/2 (h2c): h2load -D $SECONDS_ -c $CONNS -m $H2_STREAMS -t $THREADS"
echo "godwit proxy on ${PROXY_THREADS:-1} tokio worker, nginx and haproxy 1 worker/thread; backend on its own thread"
printf '%-20s %10s %10s %14s %14s %12s %12s %12s\n' target req/s p99-ms "req/s÷nginx" "p99÷nginx" \
  "cpu-µs/req" "vm-µs/req" "switches/req"
for name in h1:direct h1:nginx h1:nginx-bare h1:haproxy h1:godwit h2:nginx h2:haproxy h2:godwit; do row "$name"; done
