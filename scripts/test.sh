#!/usr/bin/env bash
# Every check CI runs: formatting, lints for both feature sets, the build
# without FUSE, the static release binary run in an empty root, and all
# tests (unit, integration, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The object store the S3 tests run against (built once, a few minutes).
scripts/garage-cluster.sh install

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== clippy (default features)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== clippy (no default features)"
cargo clippy --workspace --all-targets --no-default-features -- -D warnings
echo "== build without FUSE"
cargo build --no-default-features
echo "== the static binary, in an empty root"
scripts/release.sh
scripts/test-static.sh
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
