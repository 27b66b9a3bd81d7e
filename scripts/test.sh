#!/usr/bin/env bash
# The README's second command (and CI's): build everything once, then run every test.
# Needs root and the Debian packages runc nats-server busybox-static iproute2 curl
# skopeo docker-registry (scripts/quickstart.sh installs the first ones).
set -euo pipefail

cd "$(dirname "$0")/.."

echo "==> building"
cargo build --workspace --all-targets --locked
# The example app runs in an otherwise empty rootfs: the e2e tests need it static.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p hello --target x86_64-unknown-linux-gnu --locked

echo "==> testing"
profile=()
if [ -f .config/nextest.toml ] && grep -q '^\[profile\.ci\]' .config/nextest.toml; then
    profile=(--profile ci)
fi
cargo nextest run --workspace --locked "${profile[@]}"
cargo test --workspace --doc --locked
