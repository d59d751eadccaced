#!/usr/bin/env bash
# Every check CI runs: formatting, lints for both feature sets, the build
# without FUSE, and all tests (unit, integration, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== clippy (default features)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== clippy (no default features)"
cargo clippy --workspace --all-targets --no-default-features -- -D warnings
echo "== build without FUSE"
cargo build --no-default-features
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
