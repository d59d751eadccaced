#!/usr/bin/env bash
# Builds mapache as one self-contained file: statically linked (no shared
# library, not even libc; SFTP's libssh2 and OpenSSL inside), stripped.
#
#   scripts/release.sh            -> target/static/mapache
#
# It builds for x86_64-unknown-linux-musl, with OpenSSL built from source,
# installing the Rust target (rustup) and musl-gcc (musl-tools) when they
# are missing. Where the target cannot be had, or the musl build fails, it
# links glibc statically (a static PIE) against Debian's static OpenSSL
# instead, and says so. Either runs on any x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh file musl-tools
musl=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  timeout 600 rustup target add "$musl" >&2 ||
    echo "note: the $musl target cannot be installed here; linking glibc statically" >&2
fi

# Random numbers straight from the getrandom system call: a static binary
# cannot look the libc function up at run time, and the fallback, reading
# /dev/urandom, fails in a root without /dev.
random='--cfg getrandom_backend="linux_getrandom"'
# A target folder of its own: the flags below would rebuild everything in
# the usual one.
build_musl() {
  RUSTFLAGS="$random" cargo build --release --locked --target "$musl" \
    --target-dir target/static-build --features vendored-openssl
}
build_glibc() {
  # The flags apply to the target only (not to build scripts), as
  # --target is given.
  RUSTFLAGS="-C target-feature=+crt-static $random" OPENSSL_STATIC=1 \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --target-dir target/static-build
}
target=$musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$musl" || ! command -v musl-gcc >/dev/null; then
  target=x86_64-unknown-linux-gnu
elif ! build_musl; then
  echo "note: the musl build failed (above); linking glibc statically" >&2
  target=x86_64-unknown-linux-gnu
fi
[ "$target" = "$musl" ] || build_glibc
mkdir -p target/static
cp "target/static-build/$target/release/mapache" target/static/mapache
strip target/static/mapache
kind=$(file -b target/static/mapache)
case "$kind" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "target/static/mapache is not static: $kind" >&2; exit 1 ;;
esac
echo "target/static/mapache ($target, ${kind%%,*}): $(stat -c %s target/static/mapache) bytes"
