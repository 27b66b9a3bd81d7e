#!/usr/bin/env bash
# Issue 4's figures in a multi-region world on this box (godwit_testbed::world): state
# propagation between every pair of regions, request latency of a simulated user in each of
# the 18 cities of shared/data/latency against an app running in every region, and the extra
# latency of a cross-region request and of an autostart against a warm local request.
#
#   scripts/bench-world.sh                         # regions ams,iad,syd; as root
#   scripts/bench-world.sh --regions ams,iad,syd --requests 20 --json
#
# Builds once (release): godwit, godwit-bench and the static hello example, then runs
# `godwit-bench world` (every option after the script's name goes to it; see --help). The
# world is swept before and torn down after, also on error. Targets are printed, not asserted:
# the exit status is non-zero only on errors.
#
# Needs: root, nats-server, runc, nsenter (util-linux), iproute2, /dev/net/tun.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-world: run as root (the world creates network namespaces and cgroups)" >&2
    exit 1
fi
for tool in nats-server runc nsenter ip; do
    command -v "$tool" >/dev/null || {
        echo "bench-world: $tool is missing (apt-get install -y nats-server runc util-linux iproute2)" >&2
        exit 1
    }
done

TRIPLE="$(uname -m)-unknown-linux-gnu"
echo "==> building godwit and godwit-bench (release)"
cargo build --release -p godwit -p godwit-bench
echo "==> building the static hello example"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hello --target "$TRIPLE"

echo "==> godwit-bench world $*"
exec target/release/godwit-bench world \
    --godwit target/release/godwit \
    --hello "target/$TRIPLE/release/hello" \
    "$@"
