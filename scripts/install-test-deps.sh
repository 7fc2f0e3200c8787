#!/usr/bin/env bash
# What the test suite needs beyond Rust and Python, installed only when missing, so that
# `scripts/test.sh` works on a fresh machine as well as in CI:
#   promtool   deploy/prometheus rule tests (scripts/check-deploy.sh)
#   chromium   headless check of the fleet page (crates/server/tests/dashboard.rs)
#   moto       a real S3-compatible server (crates/server/tests/s3.rs)
#   npm        installs Node 22 and the MCP conformance suite (crates/gateway/tests/conformance.rs)
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v promtool >/dev/null || ! test -x /usr/bin/chromium; then
  $SUDO apt-get update -q && $SUDO apt-get install -y -q prometheus chromium
fi
# (A Debian python3 is "externally managed": pip then needs --break-system-packages.)
if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
  python3 -m pip install -q 'moto[server]' || python3 -m pip install -q --break-system-packages 'moto[server]'
fi
if ! command -v npm >/dev/null; then
  $SUDO apt-get update -q && $SUDO apt-get install -y -q npm
fi
