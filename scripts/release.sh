#!/usr/bin/env bash
# Builds mapache as one self-contained file: statically linked (no shared
# library, not even libc; SFTP's libssh2 and OpenSSL inside), stripped.
#
#   scripts/release.sh            -> target/static/mapache
#
# With the x86_64-unknown-linux-musl target installed (rustup target add
# x86_64-unknown-linux-musl; apt-get install musl-tools) it builds for musl,
# with OpenSSL built from source. Without it (this workplace cannot
# download Rust targets) it links glibc statically (a static PIE) against
# Debian's static OpenSSL. Either runs on any x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh file

# Random numbers straight from the getrandom system call: a static binary
# cannot look the libc function up at run time, and the fallback, reading
# /dev/urandom, fails in a root without /dev.
random='--cfg getrandom_backend="linux_getrandom"'
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl &&
  command -v musl-gcc >/dev/null; then
  target=x86_64-unknown-linux-musl
  features=(--features vendored-openssl)
  export RUSTFLAGS="$random"
else
  target=x86_64-unknown-linux-gnu
  features=()
  # Applies to the target only (not to build scripts), as --target is given.
  export RUSTFLAGS="-C target-feature=+crt-static $random"
  export OPENSSL_STATIC=1
fi
# A target folder of its own: the flags above would rebuild everything in
# the usual one.
cargo build --release --locked --target "$target" --target-dir target/static-build "${features[@]}"
mkdir -p target/static
cp "target/static-build/$target/release/mapache" target/static/mapache
strip target/static/mapache
kind=$(file -b target/static/mapache)
case "$kind" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "target/static/mapache is not static: $kind" >&2; exit 1 ;;
esac
echo "target/static/mapache ($target, ${kind%%,*}): $(stat -c %s target/static/mapache) bytes"
