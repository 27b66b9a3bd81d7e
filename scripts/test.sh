#!/usr/bin/env bash
# The README's test command: build everything once, then run every test against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --profile ci
cargo test --doc --workspace --locked
