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
  [/usr/sbin/sshd]=openssh-server
  [ssh-keygen]=openssh-client
  [python3]=python3
  [pkill]=procps
  [strip]=binutils
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
# Packages without a command: OpenSSL's headers for libssh2 (SFTP).
for pkg in libssl-dev "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Wait for another apt (an unattended upgrade) instead of failing.
  wait_lock=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait_lock[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_lock[@]}" install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
