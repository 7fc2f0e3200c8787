#!/usr/bin/env bash
# Installs what crates/gateway/tests/real_mcp.rs needs for its real authorization server:
# Node 22 (through conformance.sh, pinned there) and npm oidc-provider, pinned, into
# $LOCKSTEP_OIDC_DIR (default ${CARGO_TARGET_DIR:-<repo>/target}/oidc-provider), under a lock
# so parallel runs do not race. Prints `node: PATH` and `modules: DIR` (the npm prefix to pass
# to oidc_issuer.mjs --modules). Exit 2 when npm is missing or an install fails.
set -euo pipefail
PKG="oidc-provider@9.13.3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
CACHE="${LOCKSTEP_OIDC_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/oidc-provider}"
command -v npm >/dev/null || { echo "oidc.sh: npm not found" >&2; exit 2; }
NODE="$("$HERE/conformance.sh" --install-only | sed -n 's/^node: //p')"
[ -x "$NODE" ] || { echo "oidc.sh: no Node 22" >&2; exit 2; }
STAMP="$CACHE/installed"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$PKG" ]; then
  mkdir -p "$(dirname "$CACHE")"
  lock="$CACHE.lock" waited=0
  until mkdir "$lock" 2>/dev/null; do
    if [ -n "$(find "$lock" -maxdepth 0 -mmin +30 2>/dev/null)" ]; then rmdir "$lock" 2>/dev/null || true; continue; fi
    [ $waited -lt 600 ] || { echo "oidc.sh: timed out waiting for $lock" >&2; exit 2; }
    sleep 1; waited=$((waited + 1))
  done
  trap 'rmdir "$lock" 2>/dev/null || true' EXIT
  if [ "$(cat "$STAMP" 2>/dev/null)" != "$PKG" ]; then
    rm -rf "$CACHE"
    PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error "$PKG" >&2 \
      || { echo "oidc.sh: npm install $PKG failed" >&2; exit 2; }
    echo "$PKG" > "$STAMP"
  fi
fi
echo "node: $NODE"
echo "modules: $CACHE"
