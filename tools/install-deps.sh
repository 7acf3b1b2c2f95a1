#!/usr/bin/env bash
# Installs the Debian packages tiermark needs to build, test and run: idempotent (nothing happens
# when all are present), no prompts, and quick when there is nothing to do. Run as root or with
# passwordless sudo. The package list is the one place dependencies are named for a machine.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config git
  libbenchmark-dev libgtest-dev libgmock-dev
  libboost-dev libboost-program-options-dev
  libhwloc-dev hwloc
  nlohmann-json3-dev
  libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
  python3 python3-pytest python3-matplotlib python3-numpy python3-scipy
  likwid
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
  chromium
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "tiermark: missing Debian packages (${missing[*]}) and no root or sudo to install them" >&2
  exit 2
fi

echo "tiermark: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_install=("${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}")
# A fresh machine may have stale or empty package lists: refresh them only when the install needs it.
if ! "${apt_install[@]}" >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update -q >/dev/null
  "${apt_install[@]}" >/dev/null
fi
