#!/usr/bin/env bash
# Prepare what scripts/benchmark.py needs for the official side on a device machine without
# internet, in the git-ignored .bench/ (carried to the device, never committed):
#   .bench/TRELLIS/       the official code (trellis/ package) with its FlexiCubes submodule files
#   .bench/spconv.tar.xz  spconv-cu126 2.3.8 + cumm-cu126 0.7.11 and their pure-Python deps, unpacked
#                         as a site folder (the wheels are 97 MB; xz -9 brings them to about 40 MB)
#
#   bash scripts/benchmark_bundle.sh TRELLIS_GIT_DIR FLEXICUBES_GIT_DIR
# The two arguments are git directories (a clone's .git or a bare mirror) of microsoft/TRELLIS and
# MaxtirError/FlexiCubes. On the device:
#   mkdir -p /tmp/site && tar -xJf .bench/spconv.tar.xz -C /tmp/site
#   PYTHONPATH=/tmp/site python3 scripts/benchmark.py --official .bench/TRELLIS
set -euo pipefail
trellis_git=$1 flexicubes_git=$2
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/.bench
mkdir -p "$bench"
rm -rf "$bench/TRELLIS" && mkdir -p "$bench/TRELLIS"
git --git-dir="$trellis_git" archive HEAD trellis LICENSE | tar -x -C "$bench/TRELLIS"
mkdir -p "$bench/TRELLIS/trellis/representations/mesh/flexicubes"
submodule=$(git --git-dir="$trellis_git" ls-tree HEAD trellis/representations/mesh/flexicubes | awk '{print $3}')
git --git-dir="$flexicubes_git" archive "$submodule" flexicubes.py tables.py LICENSE.txt |
  tar -x -C "$bench/TRELLIS/trellis/representations/mesh/flexicubes"
if [ ! -f "$bench/spconv.tar.xz" ]; then
  wheels=$(mktemp -d)
  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$wheels" \
    spconv-cu126==2.3.8 cumm-cu126==0.7.11 pccm==0.4.16 ccimport==0.4.4 fire==0.7.1 termcolor==3.3.0 \
    lark==1.3.1 easydict==1.14
  mkdir "$wheels/site"
  for w in "$wheels"/*.whl; do unzip -q -o "$w" -d "$wheels/site"; done  # wheels are zips: a --target install
  tar -C "$wheels/site" -cf - . | xz -9 -T2 > "$bench/spconv.tar.xz.part"
  mv "$bench/spconv.tar.xz.part" "$bench/spconv.tar.xz"
  rm -rf "$wheels"
fi
du -sh "$bench"/*
