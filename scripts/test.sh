#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lints, unit/integration tests,
# fixture tests, and the differential test against OPA's own Go evaluator.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh   # promtool, chromium, moto[server], when missing

# OPA's evaluator as a C library (PyPI opa-golib-python-bindings); the wheel says
# Python >= 3.14 but ships a plain .so that any Python loads through ctypes.
export OPA_GOLIB_LIB="${OPA_GOLIB_LIB:-$(scripts/fetch-opa-golib.sh)}"

scripts/check-deploy.sh   # deploy/: Prometheus rules unit tests, Grafana dashboard queries

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
