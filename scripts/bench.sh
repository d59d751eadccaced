#!/usr/bin/env bash
# Side-by-side benchmark of mapache, restic and borg on the same ~1 GB
# dataset in one run: init, first snapshot, unchanged second snapshot,
# restore. Records wall time, peak RSS and repository size, and prints the
# ratios mapache/restic and mapache/borg as a Markdown table.
#
#   scripts/bench.sh [WORKDIR]     (default: ./bench-data)
#
# STEPS (default: all) picks parts: store (init, snapshots, restore; the
# other parts read the repositories it leaves), mount, staging, commit,
# verify (verify and rebuild-index against restic check and rebuild-index),
# clean (forget + clean against restic forget + prune after a second
# snapshot that drops a third of the data), history (diff, find and stats
# on 20 snapshots with small changes between them, against restic's), sftp
# (first and second snapshot and restore over SFTP to a private sshd on
# 127.0.0.1, against restic's sftp backend), s3 (the same on a 3-node
# Garage cluster on 127.0.0.1, against restic's s3 backend), far (both
# again through a proxy that delays each direction by 20 ms).
#
# The dataset is generated once (scripts/gen_bench_data.py) and reused.
# Caches are warm for every tool alike: the data fits in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
scripts/install-deps.sh restic borgbackup time python3 bindfs

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
# Results of parts not run this time are kept from the last run; those of
# the parts that run are made anew.
touch "$results"
forget_results() { # forget_results STEP...: drop earlier rows of these steps
  for step in "$@"; do sed -i "/ $step /d" "$results"; done
}
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

STEPS="${STEPS:-store mount staging commit verify clean history sftp s3 far}"
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

# Each tool runs init, first snapshot, unchanged second snapshot and
# restore ROUNDS times, each round with a fresh repository and a fresh
# restore folder; the report takes the median, since a shared VM's disk
# writeback makes single runs vary by a third.
ROUNDS="${ROUNDS:-3}"
# Every repository and restore folder of the run gets its own name and all
# old ones go now: ext4 avoids reusing inodes deleted in the last ~30 s and
# scans for others meanwhile, which slows whatever writes right after a big
# delete (and a disk mounted with `discard` is busy trimming the freed
# space). Nothing is deleted between timed steps. 35 s after deleting a
# previous run's 16 GB the first round's restores were still a third
# slower for every tool, hence a minute.
if has_step store; then
  : > "$results"
  rm -rf "$work"/*-repo "$work"/*-repo-* "$work"/*-restore-* "$work/state"
  sync
  sleep 60
fi

# A restore reads a repository that is not in the page cache, as a real
# restore does (the backup was made long before): each tool's repository
# is dropped from the cache before its restore.
cold() { python3 scripts/evict_cache.py "$@"; }

run_mapache() {
  measure mapache init "$mapache" -r "$work/mapache-repo-$round" init
  measure mapache first "$mapache" -r "$work/mapache-repo-$round" snapshot "$data"
  measure mapache second "$mapache" -r "$work/mapache-repo-$round" snapshot "$data"
  cold "$work/mapache-repo-$round"
  measure mapache restore "$mapache" -r "$work/mapache-repo-$round" restore latest --target "$work/mapache-restore-$round"
  diff -r "$data" "$work/mapache-restore-$round$data" >/dev/null || { echo "mapache restore differs" >&2; exit 1; }
  # Again into the folder that now holds it (a rerun): every file checked.
  cold "$work/mapache-repo-$round"
  measure mapache restore-again "$mapache" -r "$work/mapache-repo-$round" restore latest --target "$work/mapache-restore-$round"
}
run_restic() {
  measure restic init restic -r "$work/restic-repo-$round" init
  measure restic first restic -r "$work/restic-repo-$round" backup "$data"
  measure restic second restic -r "$work/restic-repo-$round" backup "$data"
  cold "$work/restic-repo-$round"
  measure restic restore restic -r "$work/restic-repo-$round" restore latest --target "$work/restic-restore-$round"
  cold "$work/restic-repo-$round"
  measure restic restore-again restic -r "$work/restic-repo-$round" restore latest --target "$work/restic-restore-$round"
}
run_borg() {
  measure borg init borg init --encryption=repokey-blake2 "$work/borg-repo-$round"
  measure borg first borg create "$work/borg-repo-$round::first" "$data"
  measure borg second borg create "$work/borg-repo-$round::second" "$data"
  cold "$work/borg-repo-$round"
  (cd "$work/borg-restore-$round" && measure borg restore borg extract "$work/borg-repo-$round::second")
}

# The order rotates from round to round: whoever runs right after another
# tool's restore meets its writeback, so every tool takes every place.
orders=("mapache restic borg" "restic borg mapache" "borg mapache restic")
has_step store && for round in $(seq 1 "$ROUNDS"); do
  for tool in mapache restic borg; do
    mkdir -p "$work/$tool-restore-$round"
  done
  for tool in ${orders[$(((round - 1) % 3))]}; do
    "run_$tool"
    # What this tool wrote leaves the page cache before the next one runs.
    python3 scripts/evict_cache.py "$work/$tool-repo-$round" "$work/$tool-restore-$round"
  done
done

# --- Mount and staging -----------------------------------------------------
mnt="$work/mnt"
mkdir -p "$mnt"
wait_for() { # wait_for PATH PID: until PATH exists (the mount is up)
  for _ in $(seq 1 600); do
    [ -e "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "mount process died" >&2; exit 1; }
    sleep 0.1
  done
  echo "mount did not come up" >&2
  exit 1
}
mount_rss() { # mount_rss TOOL PID: the mount process's peak RSS so far
  echo "$1 mount-rss 0 $(awk '/^VmHWM/ {print $2}' "/proc/$2/status")" | tee -a "$results" >&2
}
stop_mount() { # stop_mount PID
  kill -INT "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  fusermount3 -u "$mnt" 2>/dev/null || true
}

# The last round's repositories, warm. Each step below runs ROUNDS times
# too (medians): single runs of a mount vary by half on this VM.
round=$ROUNDS
has_step mount && forget_results mount-read mount-rss
has_step staging && forget_results copy-in snapshot-fresh copy-in-bindfs
has_step commit && forget_results commit-10000 commit-100000 ls-staging-100000 ls-snapshot-100000
has_step mount && cat "$work/mapache-repo-$round"/packs/*/* "$work/restic-repo-$round"/data/*/* >/dev/null
has_step mount && for n in $(seq 1 "$ROUNDS"); do
  "$mapache" -r "$work/mapache-repo-$round" mount "$mnt" 2>"$work/mount.log" &
  pid=$!
  wait_for "$mnt/latest" "$pid"
  measure mapache mount-read sh -c "tar cf - -C '$mnt/latest$data' . | wc -c"
  mount_rss mapache "$pid"
  stop_mount "$pid"

  restic -r "$work/restic-repo-$round" mount "$mnt" >"$work/restic-mount.log" 2>&1 &
  pid=$!
  wait_for "$mnt/snapshots/latest" "$pid"
  measure restic mount-read sh -c "tar cf - -C '$mnt/snapshots/latest$data' . | wc -c"
  mount_rss restic "$pid"
  stop_mount "$pid"
done

# Copy the dataset into the staging view of a fresh repository and commit,
# against a snapshot of the same data into a fresh repository.
has_step staging && for n in $(seq 1 "$ROUNDS"); do
  rm -rf "$work/stage-repo-$n" "$work/snap-repo-$n" "$work/state/$n"
  "$mapache" -r "$work/stage-repo-$n" init >/dev/null
  "$mapache" -r "$work/snap-repo-$n" init >/dev/null
  export MAPACHE_STATE_DIR="$work/state/$n"
  "$mapache" -r "$work/stage-repo-$n" mount "$mnt" 2>"$work/mount.log" &
  pid=$!
  wait_for "$mnt/staging" "$pid"
  measure mapache copy-in sh -c "cp -a '$data' '$mnt/staging/' && '$mapache' -r '$work/stage-repo-$n' commit -q"
  stop_mount "$pid"
  measure mapache snapshot-fresh "$mapache" -r "$work/snap-repo-$n" snapshot "$data" -q
  # The same copy into a thin FUSE passthrough (bindfs) over ext4: what
  # any FUSE file system pays for the round trips, with no store behind.
  rm -rf "$work/bindfs-under" && mkdir -p "$work/bindfs-under"
  bindfs "$work/bindfs-under" "$mnt"
  measure bindfs copy-in-bindfs sh -c "cp -a '$data' '$mnt/' && sync"
  fusermount3 -u "$mnt"
  rm -rf "$work/bindfs-under"
done

# Commit after a one-file change, in bases of 10,000 and 100,000 files.
has_step commit && for count in 10000 100000; do
  base="$work/base-$count"
  if [ ! -d "$base" ]; then
    python3 - "$base" "$count" <<'GEN'
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    folder = os.path.join(root, "d%03d" % (i % 100))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "f%06d" % i), "w") as f:
        f.write("file %d\n" % i)
GEN
  fi
  repo="$work/base-repo-$count"
  rm -rf "$repo"
  "$mapache" -r "$repo" init >/dev/null
  "$mapache" -r "$repo" stage add "$base" -q
  "$mapache" -r "$repo" commit -q
  for n in $(seq 1 "$ROUNDS"); do
    echo "changed $(date +%s%N)" >"$work/changed-file"
    "$mapache" -r "$repo" stage add "$work/changed-file" --to /base-$count/d042 -q
    measure mapache "commit-$count" "$mapache" -r "$repo" commit -q
  done
done
# ls -lR through the mount of the 100,000-file base: in staging/ (every
# entry looked up in the staging layer) and in the snapshot it committed.
has_step commit && for n in $(seq 1 "$ROUNDS"); do
  repo="$work/base-repo-100000"
  "$mapache" -r "$repo" mount "$mnt" 2>"$work/mount.log" &
  pid=$!
  wait_for "$mnt/staging" "$pid"
  measure mapache ls-staging-100000 sh -c "ls -lR '$mnt/staging/' | wc -l"
  measure mapache ls-snapshot-100000 sh -c "ls -lR '$mnt/latest/' | wc -l"
  stop_mount "$pid"
done
unset MAPACHE_STATE_DIR

# Checking and repairing: the last round's repositories (two snapshots of
# the dataset each), dropped from the page cache before every step.
if has_step verify; then
  mrepo="$work/mapache-repo-$ROUNDS" rrepo="$work/restic-repo-$ROUNDS"
  forget_results verify verify-data rebuild-index
  for n in $(seq 1 "$ROUNDS"); do
    cold "$mrepo"; measure mapache verify "$mapache" -r "$mrepo" verify
    cold "$rrepo"; measure restic verify restic -r "$rrepo" check
    cold "$mrepo"; measure mapache verify-data "$mapache" -r "$mrepo" verify --read-data
    cold "$rrepo"; measure restic verify-data restic -r "$rrepo" check --read-data
    cold "$mrepo"; measure mapache rebuild-index "$mapache" -r "$mrepo" rebuild-index
    cold "$rrepo"; measure restic rebuild-index restic -r "$rrepo" rebuild-index
  done
fi

# --- Lifecycle ---------------------------------------------------------------
# The dataset less every third file (hard links: nothing is copied).
kept="$work/data-two-thirds"
if { has_step clean || has_step history; } && [ ! -f "$work/two-thirds.done" ]; then
  rm -rf "$kept"
  cp -al "$data" "$kept"
  find "$kept" -type f | sort | awk 'NR % 3 == 0' | xargs -d '\n' rm -f
  touch "$work/two-thirds.done"
fi

# A snapshot of the dataset, a second of two thirds of it, then forgetting
# the first and reclaiming its space, timed together; the repository after
# against a fresh one holding only the second snapshot.
has_step clean && forget_results clean clean-size fresh-size
has_step clean && for n in $(seq 1 "$ROUNDS"); do
  mrepo="$work/mapache-clean-repo-$n" rrepo="$work/restic-clean-repo-$n"
  rm -rf "$mrepo" "$rrepo" "$work/mapache-fresh-repo"
  "$mapache" -r "$mrepo" init >/dev/null
  "$mapache" -r "$mrepo" snapshot "$data" -q
  "$mapache" -r "$mrepo" snapshot "$kept" -q
  first=$("$mapache" -r "$mrepo" --json log | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  restic -r "$rrepo" init >/dev/null
  restic -r "$rrepo" backup "$data" -q
  restic -r "$rrepo" backup "$kept" -q
  rfirst=$(restic -r "$rrepo" snapshots --json | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["id"])')
  cold "$mrepo"
  measure mapache clean sh -c "'$mapache' -r '$mrepo' forget $first -q && '$mapache' -r '$mrepo' clean --keep-forgotten 0"
  cold "$rrepo"
  measure restic clean sh -c "restic -r '$rrepo' forget $rfirst && restic -r '$rrepo' prune"
  "$mapache" -r "$work/mapache-fresh-repo" init >/dev/null
  "$mapache" -r "$work/mapache-fresh-repo" snapshot "$kept" -q
  echo "mapache clean-size $(du -sb "$mrepo" | cut -f1) 0" >>"$results"
  echo "restic clean-size $(du -sb "$rrepo" | cut -f1) 0" >>"$results"
  echo "mapache fresh-size $(du -sb "$work/mapache-fresh-repo" | cut -f1) 0" >>"$results"
  "$mapache" -r "$mrepo" verify -q
done

# 20 snapshots of the dataset plus a small folder that changes a little
# between them; then diff of the first and last, find of a name, stats.
has_step history && forget_results diff find stats stats-latest
if has_step history; then
  mrepo="$work/mapache-history-repo" rrepo="$work/restic-history-repo"
  changes="$work/history-changes"
  rm -rf "$mrepo" "$rrepo" "$changes"
  mkdir -p "$changes"
  "$mapache" -r "$mrepo" init >/dev/null
  restic -r "$rrepo" init >/dev/null
  for s in $(seq 1 20); do
    echo "snapshot $s" >"$changes/log-$s.txt"
    head -c $((s * 4096)) /dev/urandom >"$changes/growing.bin"
    "$mapache" -r "$mrepo" snapshot "$data" "$changes" -q
    restic -r "$rrepo" backup "$data" "$changes" -q
  done
  mids=($("$mapache" -r "$mrepo" --json log | python3 -c 'import json,sys; l=json.load(sys.stdin); print(l[0]["id"], l[-1]["id"])'))
  rids=($(restic -r "$rrepo" snapshots --json | python3 -c 'import json,sys; l=sorted(json.load(sys.stdin), key=lambda s: s["time"]); print(l[0]["id"], l[-1]["id"])'))
  name=$(find "$data" -type f | sort | sed -n 500p | xargs basename)
  for n in $(seq 1 "$ROUNDS"); do
    cold "$mrepo"; measure mapache diff "$mapache" -r "$mrepo" diff "${mids[0]}" "${mids[1]}"
    cold "$rrepo"; measure restic diff restic -r "$rrepo" diff "${rids[0]}" "${rids[1]}"
    cold "$mrepo"; measure mapache find "$mapache" -r "$mrepo" find "$name"
    cold "$rrepo"; measure restic find restic -r "$rrepo" find "$name"
    cold "$mrepo"; measure mapache stats "$mapache" -r "$mrepo" stats
    cold "$rrepo"; measure restic stats restic -r "$rrepo" stats --mode raw-data
    cold "$mrepo"; measure mapache stats-latest "$mapache" -r "$mrepo" stats latest
    cold "$rrepo"; measure restic stats-latest restic -r "$rrepo" stats latest
  done
fi

# --- Remote repositories ------------------------------------------------------
# A private sshd on a free port of 127.0.0.1 (keys made here), stopped at
# the end; both tools reach the same server with the same key.
if has_step sftp; then
  forget_results sftp-first sftp-second sftp-restore sftp-builtin-restore
  scripts/install-deps.sh openssh-server
  ssh_dir="$work/sshd"
  rm -rf "$ssh_dir"
  mkdir -p "$ssh_dir" /run/sshd
  ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/host_key"
  ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/client_key"
  cp "$ssh_dir/client_key.pub" "$ssh_dir/authorized_keys"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$ssh_dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
PidFile $ssh_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
MaxSessions 64
MaxStartups 64
CONF
  echo "[127.0.0.1]:$port $(cat "$ssh_dir/host_key.pub")" >"$ssh_dir/known_hosts"
  /usr/sbin/sshd -D -f "$ssh_dir/sshd_config" -E "$ssh_dir/sshd.log" &
  sshd_pid=$!
  trap 'kill $sshd_pid 2>/dev/null || true' EXIT
  sleep 1
  msftp=(--ssh-key "$ssh_dir/client_key" --ssh-known-hosts "$ssh_dir/known_hosts")
  rsftp=(-o "sftp.command=ssh root@127.0.0.1 -p $port -i $ssh_dir/client_key -o UserKnownHostsFile=$ssh_dir/known_hosts -o BatchMode=yes -s sftp")
  # Old runs go first, then a minute for ext4 (see the store step).
  rm -rf "$work"/*-sftp-repo-* "$work"/*-sftp-restore-*
  sync
  sleep 60
  for n in $(seq 1 "$ROUNDS"); do
    mrepo="$work/mapache-sftp-repo-$n" rrepo="$work/restic-sftp-repo-$n"
    murl="sftp://root@127.0.0.1:$port$mrepo"
    "$mapache" -r "$murl" "${msftp[@]}" init >/dev/null
    measure mapache sftp-first "$mapache" -r "$murl" "${msftp[@]}" snapshot "$data"
    measure mapache sftp-second "$mapache" -r "$murl" "${msftp[@]}" snapshot "$data"
    cold "$mrepo"
    measure mapache sftp-restore "$mapache" -r "$murl" "${msftp[@]}" restore latest --target "$work/mapache-sftp-restore-$n"
    cold "$mrepo"
    measure mapache sftp-builtin-restore "$mapache" -r "$murl" "${msftp[@]}" --ssh-client builtin restore latest --target "$work/mapache-sftp-restore-builtin-$n"
    restic -r "sftp:root@127.0.0.1:$rrepo" "${rsftp[@]}" init >/dev/null
    measure restic sftp-first restic -r "sftp:root@127.0.0.1:$rrepo" "${rsftp[@]}" backup "$data"
    measure restic sftp-second restic -r "sftp:root@127.0.0.1:$rrepo" "${rsftp[@]}" backup "$data"
    cold "$rrepo"
    measure restic sftp-restore restic -r "sftp:root@127.0.0.1:$rrepo" "${rsftp[@]}" restore latest --target "$work/restic-sftp-restore-$n"
    diff -r "$data" "$work/mapache-sftp-restore-$n$data" >/dev/null || { echo "mapache sftp restore differs" >&2; exit 1; }
    # Each round leaves about 6 GB; the disk of these VMs holds about 30.
    rm -rf "$work"/*-sftp-restore-*"$n" "$mrepo" "$rrepo"
  done
  kill "$sshd_pid" 2>/dev/null || true
  trap - EXIT
fi

garage_up() { # starts a Garage cluster in $work/garage; exports its settings
  scripts/garage-cluster.sh start "$work/garage"
  set -a
  . "$work/garage/env"
  set +a
  export AWS_DEFAULT_REGION=$AWS_REGION
}

# The same on a 3-node Garage cluster (replication factor 3), a fresh
# cluster each round: it keeps three copies of everything on this disk.
if has_step s3; then
  forget_results s3-first s3-second s3-restore
  rm -rf "$work"/*-s3-restore-* "$work/garage"
  sync
  sleep 60
  trap 'scripts/garage-cluster.sh stop "$work/garage"' EXIT
  for n in $(seq 1 "$ROUNDS"); do
    garage_up
    endpoint=${GARAGE_ENDPOINTS%% *}
    murl="s3:$endpoint/$GARAGE_BUCKET/mapache-$n" rurl="s3:$endpoint/$GARAGE_BUCKET/restic-$n"
    mcache=(--cache-dir "$work/s3-cache-$n")
    "$mapache" -r "$murl" "${mcache[@]}" init >/dev/null
    measure mapache s3-first "$mapache" -r "$murl" "${mcache[@]}" snapshot "$data"
    measure mapache s3-second "$mapache" -r "$murl" "${mcache[@]}" snapshot "$data"
    cold "$work/garage"
    measure mapache s3-restore "$mapache" -r "$murl" "${mcache[@]}" restore latest --target "$work/mapache-s3-restore-$n"
    restic -r "$rurl" init >/dev/null
    measure restic s3-first restic -r "$rurl" backup "$data"
    measure restic s3-second restic -r "$rurl" backup "$data"
    cold "$work/garage"
    measure restic s3-restore restic -r "$rurl" restore latest --target "$work/restic-s3-restore-$n"
    diff -r "$data" "$work/mapache-s3-restore-$n$data" >/dev/null || { echo "mapache s3 restore differs" >&2; exit 1; }
    scripts/garage-cluster.sh stop "$work/garage"
    rm -rf "$work"/*-s3-restore-*"$n" "$work/garage" "$work/s3-cache-$n"
  done
  trap - EXIT
fi

# SFTP and S3 again, 20 ms away: scripts/delay_proxy.py in front of the
# server (this kernel has no netem).
if has_step far; then
  forget_results far-sftp-first far-sftp-restore far-s3-first far-s3-restore
  rm -rf "$work"/*-far-* "$work/garage"
  sync
  sleep 60
  scripts/install-deps.sh openssh-server
  ssh_dir="$work/sshd"
  [ -f "$ssh_dir/sshd_config" ] || { echo "the far step uses the sftp step's sshd: run STEPS=\"sftp far\"" >&2; exit 1; }
  port=$(awk '/^Port/ {print $2}' "$ssh_dir/sshd_config")
  /usr/sbin/sshd -D -f "$ssh_dir/sshd_config" -E "$ssh_dir/sshd.log" &
  sshd_pid=$!
  garage_up
  s3_port=${GARAGE_ENDPOINTS%% *}
  s3_port=${s3_port##*:}
  free() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  far_ssh=$(free) far_s3=$(free)
  python3 scripts/delay_proxy.py "$far_ssh" "$port" 20 >/dev/null &
  proxy1=$!
  python3 scripts/delay_proxy.py "$far_s3" "$s3_port" 20 >/dev/null &
  proxy2=$!
  trap 'kill $sshd_pid $proxy1 $proxy2 2>/dev/null || true; scripts/garage-cluster.sh stop "$work/garage"' EXIT
  sleep 1
  echo "[127.0.0.1]:$far_ssh $(cat "$ssh_dir/host_key.pub")" >"$ssh_dir/known_hosts_far"
  msftp=(--ssh-key "$ssh_dir/client_key" --ssh-known-hosts "$ssh_dir/known_hosts_far")
  rsftp=(-o "sftp.command=ssh root@127.0.0.1 -p $far_ssh -i $ssh_dir/client_key -o UserKnownHostsFile=$ssh_dir/known_hosts_far -o BatchMode=yes -s sftp")
  for n in $(seq 1 "$ROUNDS"); do
    murl="sftp://root@127.0.0.1:$far_ssh$work/mapache-far-sftp-$n"
    "$mapache" -r "$murl" "${msftp[@]}" init >/dev/null
    measure mapache far-sftp-first "$mapache" -r "$murl" "${msftp[@]}" snapshot "$data"
    cold "$work/mapache-far-sftp-$n"
    measure mapache far-sftp-restore "$mapache" -r "$murl" "${msftp[@]}" restore latest --target "$work/mapache-far-sftp-restore-$n"
    rurl="sftp:root@127.0.0.1:$work/restic-far-sftp-$n"
    restic -r "$rurl" "${rsftp[@]}" init >/dev/null
    measure restic far-sftp-first restic -r "$rurl" "${rsftp[@]}" backup "$data"
    cold "$work/restic-far-sftp-$n"
    measure restic far-sftp-restore restic -r "$rurl" "${rsftp[@]}" restore latest --target "$work/restic-far-sftp-restore-$n"
    murl="s3:http://127.0.0.1:$far_s3/$GARAGE_BUCKET/mapache-far-$n" rurl="s3:http://127.0.0.1:$far_s3/$GARAGE_BUCKET/restic-far-$n"
    "$mapache" -r "$murl" --cache-dir "$work/far-cache-$n" init >/dev/null
    measure mapache far-s3-first "$mapache" -r "$murl" --cache-dir "$work/far-cache-$n" snapshot "$data"
    cold "$work/garage"
    measure mapache far-s3-restore "$mapache" -r "$murl" --cache-dir "$work/far-cache-$n" restore latest --target "$work/mapache-far-s3-restore-$n"
    restic -r "$rurl" init >/dev/null
    measure restic far-s3-first restic -r "$rurl" backup "$data"
    cold "$work/garage"
    measure restic far-s3-restore restic -r "$rurl" restore latest --target "$work/restic-far-s3-restore-$n"
  done
  kill $sshd_pid $proxy1 $proxy2 2>/dev/null || true
  scripts/garage-cluster.sh stop "$work/garage"
  trap - EXIT
fi

has_step store && for tool in mapache restic borg; do
  echo "$tool size $(du -sb "$work/$tool-repo-$ROUNDS" | cut -f1) 0" >>"$results"
done

rm -rf "$work"/*-restore-*

python3 - "$results" "$(du -sb "$data" | cut -f1)" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    tool, step, value, rss = line.split()
    runs.setdefault((tool, step), []).append((float(value), int(rss)))
# Median over the rounds, time and peak RSS each.
rows = {
    key: (statistics.median(v for v, _ in vals), statistics.median(r for _, r in vals))
    for key, vals in runs.items()
}
rounds = max(len(v) for v in runs.values())
data_bytes = int(sys.argv[2])
print(f"dataset: {data_bytes / 1e9:.2f} GB; medians of {rounds} rounds\n")
print("| step | mapache | restic | borg | mapache/restic | mapache/borg |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
def line(name, get, fmt):
    try:
        vals = [get(t) for t in ("mapache", "restic", "borg")]
    except KeyError:
        return  # a part not run
    print(f"| {name} | " + " | ".join(fmt(v) for v in vals) + f" | {vals[0] / vals[1]:.2f} | {vals[0] / vals[2]:.2f} |")
for step, name in (("first", "first snapshot"), ("second", "unchanged second snapshot"), ("restore", "restore")):
    line(f"{name}: wall s", lambda t: rows[(t, step)][0], lambda v: f"{v:.2f}")
if ("mapache", "restore-again") in rows and ("restic", "restore-again") in rows:
    m, r = rows[("mapache", "restore-again")][0], rows[("restic", "restore-again")][0]
    print(f"| restore into a folder holding that snapshot: wall s | {m:.2f} | {r:.2f} | - | {m / r:.2f} | - |")
for step, name in (("first", "first snapshot"), ("second", "second snapshot"), ("restore", "restore")):
    line(f"{name}: peak RSS MiB", lambda t: rows[(t, step)][1] / 1024, lambda v: f"{v:.0f}")
line("repository size MB", lambda t: rows[(t, "size")][0] / 1e6, lambda v: f"{v:.0f}")
if ("mapache", "first") in rows:
    first = rows[("mapache", "first")][0]
    print(f"\nmapache first snapshot throughput: {data_bytes / first / 1e6:.0f} MB/s")

def secs(tool, step):
    return rows[(tool, step)][0]
def has(*steps):
    return all(step in rows for step in steps)
print("\n| mount and staging | mapache s | compared with | s | ratio (throughput) |")
print("| --- | ---: | --- | ---: | ---: |")
if has(("mapache", "mount-read"), ("mapache", "restore"), ("restic", "mount-read")):
    mr, rr, rm = secs("mapache", "mount-read"), secs("mapache", "restore"), secs("restic", "mount-read")
    print(f"| read the snapshot through the mount (tar) | {mr:.2f} | mapache restore | {rr:.2f} | {rr / mr:.2f} |")
    print(f"| read the snapshot through the mount (tar) | {mr:.2f} | restic mount (tar) | {rm:.2f} | {rm / mr:.2f} |")
    mm, rs = rows[("mapache", "mount-rss")][1] / 1024, rows[("restic", "mount-rss")][1] / 1024
    print(f"| mount process peak RSS after the read, MiB | {mm:.0f} | restic mount | {rs:.0f} | {mm / rs:.2f} (memory) |")
if has(("mapache", "copy-in"), ("mapache", "snapshot-fresh")):
    ci, sf = secs("mapache", "copy-in"), secs("mapache", "snapshot-fresh")
    print(f"| cp -a into staging + commit | {ci:.2f} | mapache snapshot | {sf:.2f} | {sf / ci:.2f} |")
if has(("mapache", "copy-in"), ("bindfs", "copy-in-bindfs")):
    ci, bf = secs("mapache", "copy-in"), secs("bindfs", "copy-in-bindfs")
    print(f"| cp -a into staging + commit | {ci:.2f} | cp -a into bindfs over ext4 + sync | {bf:.2f} | {bf / ci:.2f} |")
if has(("mapache", "ls-staging-100000"), ("mapache", "ls-snapshot-100000")):
    ls_staged, ls_snap = secs("mapache", "ls-staging-100000"), secs("mapache", "ls-snapshot-100000")
    print(f"| ls -lR of staging/ over a 100,000-file base | {ls_staged:.2f} | ls -lR of that snapshot | {ls_snap:.2f} | {ls_snap / ls_staged:.2f} |")
if has(("mapache", "commit-10000"), ("mapache", "commit-100000")):
    c10, c100 = secs("mapache", "commit-10000"), secs("mapache", "commit-100000")
    print(f"| commit after a one-file change, 100,000-file base | {c100:.2f} | same, 10,000-file base | {c10:.2f} | time ratio {c100 / c10:.2f} |")

steps = (("verify", "verify / restic check"),
         ("verify-data", "verify --read-data / restic check --read-data"),
         ("rebuild-index", "rebuild-index / restic rebuild-index"))
if has(*[(t, s) for s, _ in steps for t in ("mapache", "restic")]):
    print("\n| checking and repairing (repository cold) | mapache s | restic s | time ratio | mapache RSS MiB | restic RSS MiB | RSS ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for step, name in steps:
        (mt, mr_), (rt, rr_) = rows[("mapache", step)], rows[("restic", step)]
        print(f"| {name} | {mt:.2f} | {rt:.2f} | {mt / rt:.2f} | {mr_ / 1024:.0f} | {rr_ / 1024:.0f} | {mr_ / rr_:.2f} |")

# (mapache's step, restic's step, what it is)
steps = (("sftp-first", "sftp-first", "first snapshot over SFTP"),
         ("sftp-second", "sftp-second", "unchanged second snapshot over SFTP"),
         ("sftp-restore", "sftp-restore", "restore over SFTP"),
         ("sftp-builtin-restore", "sftp-restore", "restore over SFTP, mapache's built-in client"),
         ("s3-first", "s3-first", "first snapshot to S3 (Garage, 3 nodes)"),
         ("s3-second", "s3-second", "unchanged second snapshot to S3"),
         ("s3-restore", "s3-restore", "restore from S3"),
         ("far-sftp-first", "far-sftp-first", "first snapshot over SFTP, 20 ms away"),
         ("far-sftp-restore", "far-sftp-restore", "restore over SFTP, 20 ms away"),
         ("far-s3-first", "far-s3-first", "first snapshot to S3, 20 ms away"),
         ("far-s3-restore", "far-s3-restore", "restore from S3, 20 ms away"))
present = [(m, r, n) for m, r, n in steps if has(("mapache", m), ("restic", r))]
if present:
    print("\n| remote repositories | mapache s | restic s | time ratio | mapache RSS MiB | restic RSS MiB | RSS ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mstep, rstep, name in present:
        (mt, mr_), (rt, rr_) = rows[("mapache", mstep)], rows[("restic", rstep)]
        print(f"| {name} | {mt:.2f} | {rt:.2f} | {mt / rt:.2f} | {mr_ / 1024:.0f} | {rr_ / 1024:.0f} | {mr_ / rr_:.2f} |")

steps = (("clean", "forget the first snapshot + clean / restic forget + prune"),
         ("diff", "diff first and last of 20 snapshots"),
         ("find", "find a name in 20 snapshots"),
         ("stats", "stats of the repository / restic stats --mode raw-data"),
         ("stats-latest", "stats latest / restic stats latest"))
present = [(s, n) for s, n in steps if has(("mapache", s), ("restic", s))]
if present:
    print("\n| lifecycle (repository cold) | mapache s | restic s | time ratio | mapache RSS MiB | restic RSS MiB | RSS ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for step, name in present:
        (mt, mr_), (rt, rr_) = rows[("mapache", step)], rows[("restic", step)]
        print(f"| {name} | {mt:.2f} | {rt:.2f} | {mt / rt:.2f} | {mr_ / 1024:.0f} | {rr_ / 1024:.0f} | {mr_ / rr_:.2f} |")
if has(("mapache", "clean-size"), ("mapache", "fresh-size"), ("restic", "clean-size")):
    cs, fs, rs = secs("mapache", "clean-size"), secs("mapache", "fresh-size"), secs("restic", "clean-size")
    print(f"\nrepository after clean: {cs / 1e6:.0f} MB, a fresh repository of the kept data {fs / 1e6:.0f} MB "
          f"(ratio {cs / fs:.3f}); restic after prune {rs / 1e6:.0f} MB")
PY
