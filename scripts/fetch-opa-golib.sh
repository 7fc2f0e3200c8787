#!/usr/bin/env bash
# Fetch OPA's Go evaluator (libopabridge.so from PyPI opa-golib-python-bindings)
# into target/opa-golib and print the library's path. Safe to run concurrently: each
# run unpacks into its own directory and the first complete one is moved in place.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="target/opa-golib"
lib="$dir/unz/opa_bindings/libopabridge.so"
if [ ! -f "$lib" ]; then
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --python-version 3.14 --only-binary=:all: \
    -d "$tmp" "opa-golib-python-bindings==0.4.4" >&2
  python3 -m zipfile -e "$tmp"/opa_golib_python_bindings-0.4.4-*.whl "$tmp/unz"
  # A half-unpacked directory from an interrupted run is replaced.
  if [ ! -f "$lib" ]; then
    rm -rf "$dir/unz"
    mv "$tmp/unz" "$dir/unz" 2>/dev/null || [ -f "$lib" ]
  fi
fi
echo "$(pwd)/$lib"
