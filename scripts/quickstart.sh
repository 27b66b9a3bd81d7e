#!/usr/bin/env bash
# The README's first command: from a fresh clone, as root, build Godwit and the example app,
# pack the app into an OCI image (no Docker, no registry), start a dev cluster on this machine
# (API, agent, and the proxy with a local CA), deploy the app and show its answer from
# https://hello.godwit.test, through the proxy.
#
#   scripts/quickstart.sh            # data in $GODWIT_HOME or ~/.godwit
#   GODWIT_HOME=/tmp/gw scripts/quickstart.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" != 0 ]; then
    echo "quickstart: run as root (Godwit's dev cluster creates network namespaces and cgroups)" >&2
    exit 1
fi

# Debian packages: the OCI runtime, the state layer, and curl for the last step.
need=()
command -v runc >/dev/null || need+=(runc)
command -v nats-server >/dev/null || need+=(nats-server)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" || {
        apt-get update
        apt-get install -y --no-install-recommends "${need[@]}"
    }
fi

echo "==> building godwit and the example app (static)"
cargo build --release -p godwit
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p hello --target x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GODWIT="$TARGET_DIR/release/godwit"

echo "==> packing examples/hello into an OCI image at target/hello-image"
# examples/hello/godwit.toml names this path (relative to itself).
mkdir -p target
rm -rf target/hello-image
"$GODWIT" image build \
    --binary "$TARGET_DIR/x86_64-unknown-linux-gnu/release/hello" \
    --out target/hello-image --name hello --tag latest --port 8080

echo "==> starting the dev cluster"
"$GODWIT" dev up
eval "$("$GODWIT" dev env)"

echo "==> deploying examples/hello"
deploy_log=$(mktemp)
(cd examples/hello && "$GODWIT" deploy) | tee "$deploy_log"
# deploy ends with the public URL and a ready-to-paste line:
#   curl --cacert <dev CA> --resolve hello.godwit.test:<port>:127.0.0.1 https://hello.godwit.test:<port>/
curl_line=$(grep -Eo 'curl --cacert .*' "$deploy_log" | tail -n 1 || true)
rm -f "$deploy_log"
if [ -z "$curl_line" ]; then
    echo "quickstart: deploy printed no public URL (see: $GODWIT dev status)" >&2
    exit 1
fi
read -r -a curl_args <<<"$curl_line"
url=${curl_args[${#curl_args[@]}-1]}

echo "==> asking the app through the proxy"
answer=""
for _ in $(seq 1 50); do
    if answer=$("${curl_args[@]}" -fsS --max-time 5); then
        break
    fi
    sleep 0.2
done
if [ -z "$answer" ]; then
    echo "quickstart: $url did not answer through the proxy" >&2
    exit 1
fi
echo "$answer"
echo
echo "The app answers at $url (TLS by the dev CA ${GODWIT_CA:-}):"
echo "  $curl_line"
echo "Try: eval \"\$($GODWIT dev env)\"; $GODWIT status -a hello; $GODWIT logs -a hello"
echo "Stop everything with: $GODWIT dev down"
