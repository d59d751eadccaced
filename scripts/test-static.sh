#!/usr/bin/env bash
# Runs the static binary (scripts/release.sh) in an empty root: a folder
# holding only the binary and the test's own files, entered with chroot.
# There it makes a repository, snapshots, restores and mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/static/mapache
[ -x "$bin" ] || { echo "$bin is missing: run scripts/release.sh first" >&2; exit 1; }
root=$(mktemp -d /tmp/mapache-static-XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  umount "$root/mnt" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
cp "$bin" "$root/mapache"
mkdir -p "$root/data/sub" "$root/mnt" "$root/dev"
head -c 3000000 /dev/urandom >"$root/data/random.bin"
seq 1 100000 >"$root/data/sub/numbers.txt"
ln -s sub/numbers.txt "$root/data/link"
echo "static-test-password" >"$root/password"
run() { chroot "$root" /mapache -r /repo --password-file /password --state-dir /state "$@"; }
run init --kdf-memory 8192 --kdf-iterations 1
run snapshot /data
run restore latest --target /restored
diff -r "$root/data" "$root/restored/data"
# The mount, through a FUSE device node of the empty root's own.
mknod "$root/dev/fuse" c 10 229
chroot "$root" /mapache -r /repo --password-file /password --state-dir /state mount /mnt &
pid=$!
for _ in $(seq 1 100); do
  [ -e "$root/mnt/latest" ] && break
  kill -0 "$pid" || { echo "the mount exited" >&2; exit 1; }
  sleep 0.1
done
diff -r "$root/data" "$root/mnt/latest/data"
kill -INT "$pid"
wait "$pid"
pid=""
echo "static binary: init, snapshot, restore and mount in an empty root: ok"
