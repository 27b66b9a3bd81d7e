#!/usr/bin/env bash
# Benchmarks godwit-proxy against a direct connection and nginx (1 worker) in front of the
# same small HTTP backend, with wrk; prints req/s and p99 latency side by side.
# Needs: wrk, nginx, nats-server (apt-get install -y wrk nginx-light nats-server).
# Usage: scripts/bench-proxy.sh [duration=10s] [connections=64] [wrk threads=2]
# (SKIP_BUILD=1 uses the already built target/release/examples/bench-proxy.)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-64}
THREADS=${3:-2}
for tool in wrk nginx nats-server; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 1; }
done

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p godwit-proxy --example bench-proxy
WORK=$(mktemp -d /tmp/godwit-bench.XXXXXX)
BENCH_PID=""
NGINX_PID=""
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
  exec 3>&- 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The proxy and backend run until their stdin (fd 3's pipe) closes.
mkfifo "$WORK/stdin"
BENCH_THREADS=1 target/release/examples/bench-proxy <"$WORK/stdin" >"$WORK/addrs" 2>"$WORK/bench.log" &
BENCH_PID=$!
exec 3>"$WORK/stdin"
for _ in $(seq 1 300); do grep -q proxy= "$WORK/addrs" 2>/dev/null && break; sleep 0.1; done
grep -q proxy= "$WORK/addrs" || { echo "bench-proxy did not start:" >&2; cat "$WORK/bench.log" >&2; exit 1; }
BACKEND=$(sed -n 's/.*backend=\([^ ]*\).*/\1/p' "$WORK/addrs")
PROXY=$(sed -n 's/.*proxy=\([^ ]*\).*/\1/p' "$WORK/addrs")

NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx-error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server $BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
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
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null && break; sleep 0.1; done

run() { # name url
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: bench.apps.godwit.test" "$2")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  printf '%-28s %12s %10s\n' "$1" "$rps" "$p99"
}
echo "wrk -t$THREADS -c$CONNS -d$DURATION (proxy on 1 tokio worker, nginx 1 worker, backend on its own thread)"
printf '%-28s %12s %10s\n' target req/s p99
run "direct (backend)" "http://$BACKEND/"
run "godwit proxy" "http://$PROXY/"
run "nginx (1 worker)" "http://127.0.0.1:$NGINX_PORT/"
