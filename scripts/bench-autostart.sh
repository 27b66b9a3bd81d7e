#!/usr/bin/env bash
# Issue 3's figure: the added latency of the first request after an autostart from zero,
# compared with a warm request (target: at most 150 ms above a warm request).
#
# Starts a dev cluster of its own (own data dir, name prefix, subnet, any free proxy ports),
# deploys examples/hello under a unique app name, then N times: stops the machine through the
# API and waits until the API reports it stopped, times ONE request through the proxy's plain
# HTTP port (the proxy starts the machine on demand), then times WARM requests. Prints p50/p95
# of the cold request, p50 of the warm ones and the difference. The cluster is taken down
# (`godwit dev down --purge`) on exit, also on error or Ctrl-C.
#
#   scripts/bench-autostart.sh [N] [WARM]      # defaults 20 and 20; as root
#   GODWIT=target/debug/godwit scripts/bench-autostart.sh
#   LOGS_OUT=/tmp/as-logs scripts/bench-autostart.sh   # keep the daemons' logs for a breakdown
#
# Needs: the example image at target/hello-image (scripts/quickstart.sh builds it), a godwit
# binary with the proxy (target/release/godwit, else target/debug/godwit), runc, nats-server,
# curl, jq, iproute2.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${1:-20}
WARM=${2:-20}

if [ "$(id -u)" != 0 ]; then
    echo "bench-autostart: run as root (the dev cluster creates network namespaces and cgroups)" >&2
    exit 1
fi
for tool in curl jq runc nats-server ip; do
    command -v "$tool" >/dev/null || {
        echo "bench-autostart: $tool is missing (apt-get install -y curl jq runc nats-server iproute2)" >&2
        exit 1
    }
done
if [ ! -f target/hello-image/index.json ]; then
    echo "bench-autostart: no image at target/hello-image: run the image steps of scripts/quickstart.sh" >&2
    exit 1
fi

has_proxy() { "$1" dev up --help 2>/dev/null | grep -q -- --proxy-http-port; }
if [ -z "${GODWIT:-}" ]; then
    for candidate in target/release/godwit target/debug/godwit; do
        if [ -x "$candidate" ] && has_proxy "$candidate"; then
            GODWIT=$candidate
            break
        fi
    done
fi
if [ -z "${GODWIT:-}" ] || ! has_proxy "$GODWIT"; then
    echo "bench-autostart: no godwit binary with the proxy (cargo build --release -p godwit)" >&2
    exit 1
fi
GODWIT=$(realpath "$GODWIT")
echo "==> using $GODWIT"

DATA=${BENCH_DATA_DIR:-/var/tmp/gw-autostart}
PREFIX=gwas
SUBNET=172.26.0.0/16
APP="as$(date +%s)$$"
WORK=$(mktemp -d)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${LOGS_OUT:-}" ] && [ -d "$DATA/dev/logs" ]; then
        mkdir -p "$LOGS_OUT" && cp -r "$DATA/dev/logs/." "$LOGS_OUT/" &&
            echo "==> daemon logs copied to $LOGS_OUT"
    fi
    echo "==> taking the cluster down"
    "$GODWIT" dev down --data-dir "$DATA" --purge >/dev/null 2>&1 ||
        echo "bench-autostart: dev down failed; run: $GODWIT dev down --data-dir $DATA --purge" >&2
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A killed earlier run may have left its cluster: take it down first.
if [ -d "$DATA" ]; then
    "$GODWIT" dev down --data-dir "$DATA" --purge >/dev/null 2>&1 || true
fi

echo "==> starting a dev cluster in $DATA (prefix $PREFIX, subnet $SUBNET)"
"$GODWIT" dev up --data-dir "$DATA" --name-prefix "$PREFIX" --subnet "$SUBNET" --no-install \
    --proxy-http-port 0 --proxy-https-port 0 >/dev/null
eval "$("$GODWIT" dev env --data-dir "$DATA")"
ENV_JSON="$DATA/dev/env.json"
HTTP_PORT=$(jq -r '.proxy.http_port' "$ENV_JSON")
DOMAIN=$(jq -r '.proxy.domain' "$ENV_JSON")
HOST="$APP.$DOMAIN"
URL="http://127.0.0.1:$HTTP_PORT/"

echo "==> deploying examples/hello as $APP"
sed -e "s/^app = .*/app = \"$APP\"/" \
    -e "s|^image = .*|image = \"oci:$ROOT/target/hello-image\"|" \
    examples/hello/godwit.toml >"$WORK/godwit.toml"
(cd "$WORK" && "$GODWIT" deploy >/dev/null 2>&1)
MACHINE=$("$GODWIT" machine list -a "$APP" --json | jq -r '.[0].id')
if [ -z "$MACHINE" ] || [ "$MACHINE" = null ]; then
    echo "bench-autostart: deploy left no machine" >&2
    exit 1
fi
echo "    machine $MACHINE, proxy http://127.0.0.1:$HTTP_PORT, Host: $HOST"

state() { "$GODWIT" machine list -a "$APP" --json | jq -r --arg id "$MACHINE" '.[] | select(.id == $id) | .state'; }
# One request through the proxy; prints seconds, fails unless 200.
timed_get() {
    local out code secs
    out=$(curl -sS -o "$WORK/body" --max-time 30 -H "Host: $HOST" -w '%{http_code} %{time_total}' "$URL")
    read -r code secs <<<"$out"
    if [ "$code" != 200 ]; then
        echo "bench-autostart: the proxy answered $code: $(head -c 300 "$WORK/body")" >&2
        echo "bench-autostart: machine state $(state); proxy log ($DATA/dev/logs/proxy.log):" >&2
        tail -n 5 "$DATA/dev/logs/proxy.log" >&2 || true
        return 1
    fi
    echo "$secs"
}
wait_state() {
    local want=$1 deadline=$((SECONDS + 30))
    until [ "$(state)" = "$want" ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "bench-autostart: machine $MACHINE not $want after 30 s (now $(state))" >&2
            return 1
        fi
    done
}

# The machine answers through the proxy before the first sample.
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null --max-time 5 -H "Host: $HOST" "$URL" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
        echo "bench-autostart: $HOST never answered through the proxy" >&2
        exit 1
    fi
done

COLD="$WORK/cold" WARMF="$WORK/warm" DIFF="$WORK/diff"
: >"$COLD"
: >"$WARMF"
: >"$DIFF"
echo "==> $N rounds: stop, 1 cold request, $WARM warm requests"
for i in $(seq 1 "$N"); do
    "$GODWIT" machine stop -a "$APP" "$MACHINE" >/dev/null
    wait_state stopped
    cold=$(timed_get)
    warm_round=()
    for _ in $(seq 1 "$WARM"); do
        warm_round+=("$(timed_get)")
    done
    printf '%s\n' "${warm_round[@]}" >>"$WARMF"
    echo "$cold" >>"$COLD"
    # This round's added latency: the cold request minus the round's warm median.
    med=$(printf '%s\n' "${warm_round[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v c="$cold" -v w="$med" 'BEGIN {printf "%.6f\n", c - w}' >>"$DIFF"
    awk -v i="$i" -v c="$cold" -v w="$med" \
        'BEGIN {printf "    round %2d: cold %7.1f ms, warm p50 %5.1f ms\n", i, c*1000, w*1000}'
done

# Nearest-rank percentile of a file of seconds, printed in milliseconds.
pct() { sort -g "$1" | awk -v p="$2" '{a[NR]=$1} END {r=int((p*NR+99)/100); if (r<1) r=1; printf "%.1f", a[r]*1000}'; }
cold50=$(pct "$COLD" 50) cold95=$(pct "$COLD" 95) warm50=$(pct "$WARMF" 50) warm95=$(pct "$WARMF" 95)
diff50=$(pct "$DIFF" 50) diff95=$(pct "$DIFF" 95)
echo
echo "autostart from zero, $N rounds ($GODWIT), milliseconds:"
printf '  cold request        p50 %7s   p95 %7s\n' "$cold50" "$cold95"
printf '  warm request        p50 %7s   p95 %7s   (%s samples)\n' "$warm50" "$warm95" "$((N * WARM))"
printf '  added (cold - warm) p50 %7s   p95 %7s   (per round, against that round'"'"'s warm p50)\n' "$diff50" "$diff95"
if awk -v d="$diff50" 'BEGIN {exit !(d <= 150)}'; then
    echo "  target: added <= 150 ms -> met at p50"
else
    echo "  target: added <= 150 ms -> NOT met at p50"
fi

# Where the cold request's time goes, from the daemons' log timestamps (medians over the rounds):
# the agent records `starting` -> the runtime reports the container's pid (shim launch, runc
# create + start) -> the agent's operation is done (state records) -> the proxy logs `machine
# started on demand` (the API's answer, then the proxy's port poll). The rest of the cold
# request (curl's time minus that span) is the proxy choosing the machine, its POST to the API,
# the API's placement lookup and call to the agent, the agent persisting the operation, and
# after the wake the forward of the request to the machine.
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
tod() { awk '{split(substr($1, 12, 15), t, ":"); printf "%.6f\n", t[1]*3600 + t[2]*60 + t[3]}'; }
LOGS="$DATA/dev/logs"
strip "$LOGS/agent.log" | grep 'op{op="start"' | grep 'state=starting' | tod >"$WORK/t1"
strip "$LOGS/agent.log" | grep 'op{op="start"' | grep 'godwit_runtime.*machine started' | tod >"$WORK/t2"
strip "$LOGS/agent.log" | grep 'op{op="start"' | grep 'operation done' | tod >"$WORK/t3"
strip "$LOGS/proxy.log" | grep 'machine started on demand' | tod >"$WORK/t4"
rows=$(paste "$WORK/t1" "$WORK/t2" "$WORK/t3" "$WORK/t4" "$COLD" | awk 'NF == 5' | wc -l)
if [ "$rows" -eq "$N" ]; then
    paste "$WORK/t1" "$WORK/t2" "$WORK/t3" "$WORK/t4" "$COLD" |
        awk '{printf "%f %f %f %f\n", $2-$1, $3-$2, $4-$3, $5-($4-$1)}' >"$WORK/steps"
    echo
    echo "where the cold request goes (median ms over $N rounds, from the daemons' logs):"
    col=1
    for step in "agent 'starting' -> container pid (shim launch, runc create+start)" \
        "pid -> agent op done (state records)" \
        "op done -> proxy 'started on demand' (API reply, port poll)" \
        "the rest: proxy -> API -> agent op recorded, then the forward"; do
        cut -d' ' -f"$col" "$WORK/steps" >"$WORK/step"
        printf '  %-62s %7s\n' "$step" "$(pct "$WORK/step" 50)"
        col=$((col + 1))
    done
else
    echo "(no breakdown: $rows of $N rounds matched in the logs)"
fi
