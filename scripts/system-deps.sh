#!/usr/bin/env bash
# Installs the distribution tools the test suite drives (real clients and servers), when missing.
# As root it installs them with apt-get; otherwise it lists what is missing and the tests that
# need those tools skip with a reason naming the missing tool.
set -euo pipefail

# command -> Debian package
declare -A tools=(
  [curl]=curl [git]=git [ip]=iproute2 [unshare]=util-linux [nsenter]=util-linux
  [setpriv]=util-linux [gcc]=gcc [bwrap]=bubblewrap [node]=nodejs [openssl]=openssl
)
missing=()
for cmd in "${!tools[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
# /usr/bin/python3 must be able to create a venv: the rootless tests run as nobody from one.
if ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
# libseccomp is loaded by pyseccomp at run time.
if ! ldconfig -p 2>/dev/null | grep -q 'libseccomp.so.2'; then missing+=(libseccomp2); fi

[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
else
  echo "system-deps: missing ${missing[*]} (not root: the tests that need them will skip)" >&2
fi
