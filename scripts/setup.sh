#!/usr/bin/env bash
# Installs the Debian packages flexmoe needs. Idempotent: quiet and quick when
# everything is already installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build git python3
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
  libflatbuffers-dev flatbuffers-compiler
  libgtest-dev
  libopenmpi-dev openmpi-bin libopenblas-dev
  nlohmann-json3-dev
  # flexmoe-run's built-in corpus (the King James Bible, public domain) and
  # the PyTorch cross-check and benchmark peer.
  bible-kjv python3-torch python3-numpy
  # LLVM 19's CMake package links LLVMSupport against ZLIB::ZLIB.
  zlib1g-dev
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
