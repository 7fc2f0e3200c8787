#!/usr/bin/env bash
# Fetch OPA's Go evaluator (libopabridge.so from PyPI opa-golib-python-bindings)
# into target/opa-golib and print the library's path.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="target/opa-golib"
lib="$dir/unz/opa_bindings/libopabridge.so"
if [ ! -f "$lib" ]; then
  mkdir -p "$dir"
  python3 -m pip download -q --no-deps --python-version 3.14 --only-binary=:all: \
    -d "$dir" "opa-golib-python-bindings==0.4.4" >&2
  python3 -m zipfile -e "$dir"/opa_golib_python_bindings-0.4.4-*.whl "$dir/unz"
fi
echo "$(pwd)/$lib"
