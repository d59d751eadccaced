#!/usr/bin/env bash
# Side-by-side benchmark of mapache, restic and borg on the same ~1 GB
# dataset in one run: init, first snapshot, unchanged second snapshot,
# restore. Records wall time, peak RSS and repository size, and prints the
# ratios mapache/restic and mapache/borg as a Markdown table.
#
#   scripts/bench.sh [WORKDIR]     (default: ./bench-data)
#
# The dataset is generated once (scripts/gen_bench_data.py) and reused.
# Caches are warm for every tool alike: the data fits in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
scripts/install-deps.sh restic borgbackup time python3

work="$(realpath -m "${1:-$root/bench-data}")"
data="$work/data"
mkdir -p "$work"
if [ ! -f "$work/data.done" ]; then
  rm -rf "$data"
  echo "generating the dataset in $data" >&2
  python3 scripts/gen_bench_data.py "$data"
  touch "$work/data.done"
fi

cargo build --release --quiet
mapache="$root/target/release/mapache"

results="$work/results.txt"
: > "$results"
export RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password MAPACHE_PASSWORD=bench-password
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset MAPACHE_REPOSITORY MAPACHE_PASSWORD_FILE MAPACHE_PASSWORD_COMMAND

# measure TOOL STEP COMMAND...: appends "TOOL STEP SECONDS PEAK_RSS_KIB".
measure() {
  local tool=$1 step=$2
  shift 2
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >"$work/$tool-$step.log" 2>&1 || {
    echo "$tool $step failed:" >&2
    tail -n 20 "$work/$tool-$step.log" >&2
    exit 1
  }
  read -r secs rss <"$work/time.out"
  echo "$tool $step $secs $rss" | tee -a "$results" >&2
}

for tool in mapache restic borg; do
  rm -rf "$work/$tool-repo" "$work/$tool-restore"
  mkdir -p "$work/$tool-restore"
done
# ext4 avoids reusing inodes deleted in the last ~30 s and scans for others
# meanwhile, which slows whichever restore runs right after a big delete.
sync
sleep 35

measure mapache init "$mapache" -r "$work/mapache-repo" init
measure mapache first "$mapache" -r "$work/mapache-repo" snapshot "$data"
measure mapache second "$mapache" -r "$work/mapache-repo" snapshot "$data"
measure mapache restore "$mapache" -r "$work/mapache-repo" restore latest --target "$work/mapache-restore"
diff -r "$data" "$work/mapache-restore$data" >/dev/null || { echo "mapache restore differs" >&2; exit 1; }

measure restic init restic -r "$work/restic-repo" init
measure restic first restic -r "$work/restic-repo" backup "$data"
measure restic second restic -r "$work/restic-repo" backup "$data"
measure restic restore restic -r "$work/restic-repo" restore latest --target "$work/restic-restore"

measure borg init borg init --encryption=repokey-blake2 "$work/borg-repo"
measure borg first borg create "$work/borg-repo::first" "$data"
measure borg second borg create "$work/borg-repo::second" "$data"
(cd "$work/borg-restore" && measure borg restore borg extract "$work/borg-repo::second")

for tool in mapache restic borg; do
  echo "$tool size $(du -sb "$work/$tool-repo" | cut -f1) 0" >>"$results"
done

python3 - "$results" "$(du -sb "$data" | cut -f1)" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    tool, step, value, rss = line.split()
    rows[(tool, step)] = (float(value), int(rss))
data_bytes = int(sys.argv[2])
print(f"dataset: {data_bytes / 1e9:.2f} GB\n")
print("| step | mapache | restic | borg | mapache/restic | mapache/borg |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
def line(name, get, fmt):
    vals = [get(t) for t in ("mapache", "restic", "borg")]
    print(f"| {name} | " + " | ".join(fmt(v) for v in vals) + f" | {vals[0] / vals[1]:.2f} | {vals[0] / vals[2]:.2f} |")
for step, name in (("first", "first snapshot"), ("second", "unchanged second snapshot"), ("restore", "restore")):
    line(f"{name}: wall s", lambda t: rows[(t, step)][0], lambda v: f"{v:.2f}")
for step, name in (("first", "first snapshot"), ("second", "second snapshot"), ("restore", "restore")):
    line(f"{name}: peak RSS MiB", lambda t: rows[(t, step)][1] / 1024, lambda v: f"{v:.0f}")
line("repository size MB", lambda t: rows[(t, "size")][0] / 1e6, lambda v: f"{v:.0f}")
first = rows[("mapache", "first")][0]
print(f"\nmapache first snapshot throughput: {data_bytes / first / 1e6:.0f} MB/s")
PY
