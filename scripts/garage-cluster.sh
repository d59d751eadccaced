#!/usr/bin/env bash
# A 3-node Garage cluster on 127.0.0.1 with replication factor 3, for the
# tests and the benchmark.
#
#   scripts/garage-cluster.sh start DIR    makes it in DIR and writes DIR/env
#                                          (credentials, endpoints, bucket)
#   scripts/garage-cluster.sh stop DIR     stops its nodes
#   scripts/garage-cluster.sh install      builds garage if it is missing
#
# Garage is AGPL: it runs here as a test server and is never linked.
set -euo pipefail
GARAGE_VERSION=2.5.0
garage="${GARAGE:-$HOME/.cargo/bin/garage}"

install() {
  if ! "$garage" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "building garage $GARAGE_VERSION (a few minutes, once)" >&2
    cargo install garage --version "$GARAGE_VERSION" --locked --quiet
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1
  install
  mkdir -p "$dir"
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  : >"$dir/pids"
  local endpoints=()
  for n in 1 2 3; do
    local rpc s3
    rpc=$(free_port)
    s3=$(free_port)
    mkdir -p "$dir/node$n/meta" "$dir/node$n/data"
    cat >"$dir/node$n/garage.toml" <<CONF
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
CONF
    RUST_LOG=warn "$garage" -c "$dir/node$n/garage.toml" server >"$dir/node$n/log" 2>&1 &
    echo "$!" >>"$dir/pids"
    echo "$rpc" >"$dir/node$n/rpc_port"
    endpoints+=("http://127.0.0.1:$s3")
  done
  local g=("$garage" -c "$dir/node1/garage.toml")
  for _ in $(seq 1 100); do
    "${g[@]}" node id -q >/dev/null 2>&1 && break
    sleep 0.2
  done
  local ids=()
  for n in 1 2 3; do
    local id
    for _ in $(seq 1 100); do
      id=$("$garage" -c "$dir/node$n/garage.toml" node id -q 2>/dev/null) && break
      sleep 0.2
    done
    ids+=("$id")
  done
  for n in 1 2; do
    "${g[@]}" node connect "${ids[$n]}" >/dev/null
  done
  for id in "${ids[@]}"; do
    "${g[@]}" layout assign -z dc1 -c 1G "${id%%@*}" >/dev/null
  done
  "${g[@]}" layout apply --version 1 >/dev/null
  local key
  key=$("${g[@]}" key create mapache-test)
  local key_id secret_key
  key_id=$(echo "$key" | awk -F': *' '/Key ID/ {print $2}')
  secret_key=$(echo "$key" | awk -F': *' '/Secret key/ {print $2}')
  "${g[@]}" bucket create mapache >/dev/null
  "${g[@]}" bucket allow --read --write --owner mapache --key mapache-test >/dev/null
  cat >"$dir/env" <<ENV
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret_key
AWS_REGION=garage
GARAGE_ENDPOINTS="${endpoints[*]}"
GARAGE_BUCKET=mapache
ENV
}

stop() {
  local dir=$1
  [ -f "$dir/pids" ] || return 0
  while read -r pid; do
    kill "$pid" 2>/dev/null || true
  done <"$dir/pids"
  while read -r pid; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done <"$dir/pids"
  rm -f "$dir/pids"
}

case "${1:-}" in
  start) start "$2" ;;
  stop) stop "$2" ;;
  install) install ;;
  *) echo "usage: $0 start DIR | stop DIR | install" >&2; exit 2 ;;
esac
