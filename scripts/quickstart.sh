#!/usr/bin/env bash
# Builds mapache and runs the main job on a local repository under ./demo:
# init, snapshot a folder (the argument, or a generated sample), list it,
# restore it elsewhere and compare the result with the original.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

cargo build --release
mapache="$PWD/target/release/mapache"

demo="$PWD/demo"
mkdir -p "$demo"
export MAPACHE_REPOSITORY="$demo/repo"
export MAPACHE_PASSWORD_FILE="$demo/password"
if [ ! -f "$MAPACHE_PASSWORD_FILE" ]; then
  (umask 077; head -c 24 /dev/urandom | base64 > "$MAPACHE_PASSWORD_FILE")
  echo "generated a password in $MAPACHE_PASSWORD_FILE"
fi

source_dir="${1:-}"
if [ -z "$source_dir" ]; then
  source_dir="$demo/sample"
  if [ ! -d "$source_dir" ]; then
    mkdir -p "$source_dir/docs" "$source_dir/data"
    for i in $(seq 1 50); do
      printf 'note %d: mapache keeps every version of this file\n' "$i" > "$source_dir/docs/note-$i.txt"
    done
    head -c $((12 * 1024 * 1024)) /dev/urandom > "$source_dir/data/random.bin"
    ln -sf ../docs/note-1.txt "$source_dir/data/link-to-note"
  fi
fi
source_dir="$(cd "$source_dir" && pwd)"

if [ ! -f "$MAPACHE_REPOSITORY/config" ]; then
  "$mapache" init
fi
"$mapache" snapshot "$source_dir" --tag quickstart
"$mapache" log
"$mapache" ls latest "$source_dir" -l | head -n 20

target="$demo/restore"
rm -rf "$target"
"$mapache" restore latest --target "$target" --verify
diff -r "$source_dir" "$target$source_dir"
echo "quickstart: restored tree matches $source_dir"
