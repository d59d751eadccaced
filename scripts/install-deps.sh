#!/usr/bin/env bash
# Installs the system packages that building and testing mapache need, when
# they are missing. Safe to run again; does nothing when all are present.
set -euo pipefail

# command -> Debian package that provides it
declare -A needed=(
  [pkg-config]=pkg-config
  [cc]=gcc
  [setfattr]=attr
  [setfacl]=acl
  [fusermount3]=fuse3
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
