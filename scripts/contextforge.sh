#!/usr/bin/env bash
# contextforge.sh -- start/stop IBM ContextForge (PyPI mcp-contextforge-gateway 1.1.0) in front of
# one Streamable HTTP MCP upstream, as the peer gateway for lockstep's gateway benchmark.
#
# FOR BENCHMARKS ONLY. Never run by CI: it installs a ~240 MB Python venv from PyPI (~25-30 s) and
# starts a ~1 GB-RSS server (5 processes). Loopback only (127.0.0.1); SQLite; no Redis; no UI; rate limiting off.
#
# Interface:
#   scripts/contextforge.sh start UPSTREAM_URL STATE_DIR
#       1. installs, once, a venv with mcp-contextforge-gateway==1.1.0 (+ mcp==2.3.0) at
#          $LOCKSTEP_BENCH_DIR/contextforge-venv (default <repo>/target/bench/contextforge-venv),
#          under a mkdir lock, so concurrent starts install only once. Needs Python 3.12 or 3.13
#          (ContextForge 1.1.0 has Requires-Python >=3.12,<3.14); exits 3 if none is found.
#       2. starts ContextForge on 127.0.0.1:<free port> with all its state (SQLite db, secrets,
#          temp dir, logs) under STATE_DIR, waits for GET /health = 200,
#       3. registers UPSTREAM_URL (POST /gateways, transport STREAMABLEHTTP), then a public virtual
#          server with all the upstream's tools (POST /servers),
#       4. prints exactly one line on stdout and exits 0, leaving ContextForge running:
#              READY <mcp_url> <bearer_token> <exposed_name_of_read_database>
#          e.g. READY http://127.0.0.1:PORT/servers/<id>/mcp eyJ... db-upstream-read-database
#          Its process ids are in STATE_DIR/pids. Everything else goes to stderr or STATE_DIR/*.log.
#       On any failure it stops what it started, prints the reason and the log tail on stderr,
#       and exits non-zero (3: no suitable Python; 1: anything else).
#   scripts/contextforge.sh stop STATE_DIR
#       TERM, then (after 15 s) KILL, every process start started (by pid, recorded in
#       STATE_DIR/pids, checked against its start time so a reused pid is never hit). Idempotent.
#
# Environment:
#   LOCKSTEP_BENCH_DIR  where the venv goes (default <repo>/target/bench)
#   CF_STATEFUL=1       USE_STATEFUL_SESSIONS=true: ContextForge then reuses one upstream MCP session
#                       per downstream session (~3x less added latency in shared/research notes).
#                       Unset/0: ContextForge's default (stateless: a new upstream session, with
#                       initialize, per tools/call).
#   CF_PYTHON           a python3.12/3.13 to build the venv with (default: python3.12, python3.13,
#                       then ~/.pyenv/versions/3.12.* and 3.13.*)
#   CF_TOKEN_MINUTES    lifetime of the bearer token (default 1440 = 24 h)
#   CF_START_TIMEOUT    seconds to wait for /health (default 240; start-up with migrations took 7-22 s)
#   CF_LOG_LEVEL        ContextForge LOG_LEVEL (default ERROR, so logging does not skew timings)
#   CF_HEALTH_CHECK_INTERVAL  seconds between ContextForge's background health checks of the
#                       upstream (default 86400: none during a benchmark; ContextForge's own default,
#                       60, sends a full initialize/.../DELETE session to the upstream every minute)
#
# Settings applied (see the sourced notes, shared/research/contextforge-run/README.md):
#   SSRF_ALLOW_LOCALHOST=true (else a loopback upstream is refused), RATE_LIMITING_ENABLED=false
#   (else MCP paths are limited to 100/min), CACHE_TYPE=memory, UI/catalog/LLM chat off, own TMPDIR
#   per instance (ContextForge keeps its leader/migration lock files there), and
#   HEALTH_CHECK_INTERVAL (above).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${LOCKSTEP_BENCH_DIR:-$ROOT/target/bench}"
VENV="$BENCH_DIR/contextforge-venv"
PKGS=("mcp-contextforge-gateway==1.1.0" "mcp==2.3.0")
STAMP_TEXT="${PKGS[*]}"

log() { printf '[contextforge.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

usage() {
  echo "usage: $0 start UPSTREAM_URL STATE_DIR | $0 stop STATE_DIR" >&2
  exit 2
}

# ------------------------------------------------------------------ processes
proc_start_time() {  # PID -> field 22 of /proc/PID/stat (start time in clock ticks), or nothing
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  # shellcheck disable=SC2086
  set -- $st
  echo "${20}"
}

descendants() {  # PID -> all descendants, recursively (by parent pid)
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do echo "$c"; descendants "$c"; done
}

record_pids() {  # STATE_DIR PID... -> append "pid starttime" lines to STATE_DIR/pids
  local dir="$1" p t; shift
  for p in "$@"; do
    grep -q "^$p " "$dir/pids" 2>/dev/null && continue
    t="$(proc_start_time "$p")" || continue
    echo "$p $t" >> "$dir/pids"
  done
}

cmd_stop() {  # STATE_DIR
  local dir="$1" pid t cur live=() p alive=0
  [ -f "$dir/pids" ] || return 0
  while read -r pid t; do
    [ -n "$pid" ] || continue
    cur="$(proc_start_time "$pid")" || continue
    [ "$cur" = "$t" ] || continue   # pid reused by something else: leave it alone
    live+=("$pid")
    # helpers ContextForge forked after the pid list was written
    for p in $(descendants "$pid"); do live+=("$p"); done
  done < "$dir/pids"
  # shellcheck disable=SC2207
  [ ${#live[@]} -gt 0 ] && live=($(printf '%s\n' "${live[@]}" | sort -un))
  if [ ${#live[@]} -gt 0 ]; then
    log "stopping pids ${live[*]}"
    for p in "${live[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 60); do
      alive=0
      for p in "${live[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.25
    done
    if [ "$alive" = 1 ]; then
      log "still alive after 15 s, SIGKILL"
      for p in "${live[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
  fi
  rm -f "$dir/pids"
}

# ------------------------------------------------------------------ install
find_python() {
  local c v
  for c in ${CF_PYTHON:-} python3.12 python3.13 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
           "$HOME"/.pyenv/versions/3.13*/bin/python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    # pyenv shims exist for versions that are not active; asking the version weeds them out
    v="$("$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || continue
    case "$v" in 3.12|3.13) command -v "$c"; return 0;; esac
  done
  return 1
}

install_venv() {  # returns 0 when installed, 3 when no suitable Python, 1 on other failures
  local lock="$VENV.lock" py waited=0 owner t0 rc=0
  if [ "$(cat "$VENV/.lockstep-installed" 2>/dev/null)" = "$STAMP_TEXT" ]; then return 0; fi
  mkdir -p "$BENCH_DIR"
  until mkdir "$lock" 2>/dev/null; do
    owner="$(cat "$lock/pid" 2>/dev/null || true)"
    if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
      log "removing stale install lock of dead pid $owner"
      rm -rf "$lock"; continue
    fi
    [ $((waited % 30)) = 0 ] && log "waiting for another install (lock $lock, pid ${owner:-?})"
    sleep 1; waited=$((waited + 1))
    [ "$waited" -lt 1800 ] || { log "gave up waiting for $lock after 30 min"; return 1; }
  done
  echo $$ > "$lock/pid"
  if [ "$(cat "$VENV/.lockstep-installed" 2>/dev/null)" != "$STAMP_TEXT" ]; then
    if ! py="$(find_python)"; then
      echo "contextforge.sh: ContextForge 1.1.0 needs Python 3.12 or 3.13; none found (tried" \
           "\$CF_PYTHON, python3.12, python3.13, ~/.pyenv/versions/3.12*, 3.13*)" >&2
      rc=3
    else
      t0=$SECONDS
      log "installing ${PKGS[*]} into $VENV with $py ($("$py" --version 2>&1)), nice 15; log in $VENV.install.log"
      rm -rf "$VENV"
      if {
        "$py" -m venv "$VENV" &&
        nice -n 15 "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip &&
        nice -n 15 "$VENV/bin/pip" install --disable-pip-version-check -q "${PKGS[@]}" &&
        "$VENV/bin/pip" freeze --disable-pip-version-check > "$VENV/lockstep-freeze.txt"
      } > "$VENV.install.log" 2>&1; then
        echo "$STAMP_TEXT" > "$VENV/.lockstep-installed"
        log "installed in $((SECONDS - t0)) s"
      else
        log "install failed; tail of $VENV.install.log:"; tail -n 30 "$VENV.install.log" >&2
        rm -rf "$VENV"; rc=1
      fi
    fi
  fi
  rm -rf "$lock"
  return "$rc"
}

# ------------------------------------------------------------------ start
STATE=""
STARTED=0
fail() {  # REASON -> stop what was started, show the log tail, exit 1
  trap - EXIT INT TERM HUP
  set +e
  log "start FAILED: $*"
  local f
  for f in "$STATE"/init_secrets.log "$STATE"/token.log "$STATE"/register.log "$STATE"/gateway.log; do
    [ -s "$f" ] && { echo "== tail of $f (lines cut at 600 chars)" >&2; tail -n 25 "$f" | cut -c1-600 >&2; }
  done
  [ "$STARTED" = 1 ] && cmd_stop "$STATE"
  exit 1
}

wait_health() {  # URL PID SECONDS
  local code
  for _ in $(seq 1 $(( $3 * 2 ))); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null || true)"
    [ "$code" = 200 ] && return 0
    kill -0 "$2" 2>/dev/null || fail "ContextForge (pid $2) exited before $1 answered"
    sleep 0.5
  done
  fail "timeout ($3 s) waiting for $1"
}

cmd_start() {  # UPSTREAM_URL STATE_DIR
  local upstream="$1" port pid t0=$SECONDS out t
  mkdir -p "$2"
  STATE="$(cd "$2" && pwd)"
  trap 'fail "unexpected error (line $LINENO)"' EXIT
  if [ -s "$STATE/pids" ]; then
    while read -r pid t; do
      if [ "$(proc_start_time "$pid" 2>/dev/null)" = "$t" ]; then
        trap - EXIT
        log "start FAILED: $STATE already has a running ContextForge (pid $pid); run: $0 stop $STATE"
        exit 1
      fi
    done < "$STATE/pids"
    rm -f "$STATE/pids"
  fi
  case "$upstream" in http://127.0.0.1:*|http://localhost:*|http://\[::1\]:*) ;;
    *) fail "UPSTREAM_URL must be a loopback http:// URL, got '$upstream'";; esac
  trap 'fail "interrupted by a signal"' INT TERM HUP
  rm -f "$STATE"/{gateway,register,token,init_secrets}.log "$STATE/info.txt" "$STATE/token.txt"

  local rc=0
  install_venv || rc=$?
  if [ "$rc" = 3 ]; then trap - EXIT; exit 3; fi
  [ "$rc" = 0 ] || fail "install failed"
  local PY="$VENV/bin/python"
  t0=$SECONDS

  rm -rf "$STATE/tmp" "$STATE/mcp.db" "$STATE/mcp.db-"*
  mkdir -p "$STATE/tmp"
  # Random secrets (JWT_SECRET_KEY AUTH_ENCRYPTION_SECRET BASIC_AUTH_PASSWORD PLATFORM_ADMIN_PASSWORD
  # DEFAULT_USER_PASSWORD); ContextForge refuses to start without them (passwords >= 12 chars).
  ( umask 077 && cd "$STATE" && "$PY" -m mcpgateway.scripts.init_secrets \
      --output "$STATE/secrets.env" --force ) > "$STATE/init_secrets.log" 2>&1 \
    || { cat "$STATE/init_secrets.log" >&2; fail "init_secrets failed"; }
  local JWT_SECRET_KEY AUTH_ENCRYPTION_SECRET BASIC_AUTH_PASSWORD PLATFORM_ADMIN_PASSWORD DEFAULT_USER_PASSWORD
  # shellcheck disable=SC1091
  . "$STATE/secrets.env"
  if [ -z "${JWT_SECRET_KEY:-}" ] || [ -z "${AUTH_ENCRYPTION_SECRET:-}" ]; then fail "secrets.env lacks JWT_SECRET_KEY or AUTH_ENCRYPTION_SECRET"; fi

  port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local stateful=false
  [ "${CF_STATEFUL:-0}" = 1 ] && stateful=true
  local CF_ENV=(
    HOST=127.0.0.1 PORT="$port"
    DATABASE_URL="sqlite:///$STATE/mcp.db" TMPDIR="$STATE/tmp"
    JWT_SECRET_KEY="$JWT_SECRET_KEY" AUTH_ENCRYPTION_SECRET="$AUTH_ENCRYPTION_SECRET"
    BASIC_AUTH_USER=admin BASIC_AUTH_PASSWORD="$BASIC_AUTH_PASSWORD"
    PLATFORM_ADMIN_EMAIL=admin@example.com PLATFORM_ADMIN_PASSWORD="$PLATFORM_ADMIN_PASSWORD"
    DEFAULT_USER_PASSWORD="$DEFAULT_USER_PASSWORD"
    AUTH_REQUIRED=true
    MCPGATEWAY_UI_ENABLED=false MCPGATEWAY_ADMIN_API_ENABLED=true
    SSRF_ALLOW_LOCALHOST=true
    CACHE_TYPE=memory
    RATE_LIMITING_ENABLED=false RATE_LIMITING_REDIS_ENABLED=false
    LLMCHAT_ENABLED=false MCPGATEWAY_CATALOG_ENABLED=false
    HEALTH_CHECK_INTERVAL="${CF_HEALTH_CHECK_INTERVAL:-86400}"
    LOG_LEVEL="${CF_LOG_LEVEL:-ERROR}"
  )
  [ "$stateful" = true ] && CF_ENV+=(USE_STATEFUL_SESSIONS=true)

  # Own cwd (no stray .env is read), stdin from /dev/null and stdout/stderr to the log, so the
  # caller's pipes are not held open by the server after this script exits.
  ( cd "$STATE" && exec env "${CF_ENV[@]}" "$VENV/bin/mcpgateway" --host 127.0.0.1 --port "$port" ) \
    < /dev/null > "$STATE/gateway.log" 2>&1 &
  pid=$!
  STARTED=1
  record_pids "$STATE" "$pid"
  log "ContextForge pid $pid on 127.0.0.1:$port (USE_STATEFUL_SESSIONS=$stateful), state in $STATE"
  wait_health "http://127.0.0.1:$port/health" "$pid" "${CF_START_TIMEOUT:-240}"
  # shellcheck disable=SC2046
  record_pids "$STATE" $(descendants "$pid")
  log "healthy after $((SECONDS - t0)) s"

  # Bearer: a JWT for the bootstrapped platform admin (create_jwt_token loads the full settings,
  # so it needs the same environment).
  local token
  token="$(cd "$STATE" && env "${CF_ENV[@]}" "$PY" -m mcpgateway.utils.create_jwt_token \
      --username admin@example.com --exp "${CF_TOKEN_MINUTES:-1440}" --secret "$JWT_SECRET_KEY" \
      2> "$STATE/token.log" | tail -n 1)" || fail "create_jwt_token failed"
  case "$token" in ey*.*.*) ;; *) fail "create_jwt_token printed no JWT: '$token'";; esac
  ( umask 077 && printf '%s\n' "$token" > "$STATE/token.txt" )

  out="$("$PY" - "http://127.0.0.1:$port" "$STATE/token.txt" "$upstream" 2> "$STATE/register.log" <<'PY'
# Register the upstream with ContextForge's admin REST API and bundle its tools in a virtual server.
#   POST /gateways {name, url, transport: STREAMABLEHTTP} -> ContextForge runs initialize + tools/list
#   GET  /tools?gateway_id=ID                             -> the tools, renamed "<gateway-slug>-<tool-slug>"
#   POST /servers {server: {name, associated_tools}}      -> the virtual server
# Prints: <mcp_url> <exposed name of read_database>
import json, sys, time, urllib.error, urllib.request

base, token_file, upstream = sys.argv[1], sys.argv[2], sys.argv[3]
token = open(token_file).read().strip()

def call(method, path, body=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path} -> HTTP {e.code}: {e.read()[:800]!r}")

gw = call("POST", "/gateways", {"name": "db_upstream", "url": upstream, "transport": "STREAMABLEHTTP",
                                "description": "lockstep benchmark upstream"})
print("gateway:", json.dumps(gw)[:2000], file=sys.stderr)
tools = []
for _ in range(100):
    got = call("GET", f"/tools?gateway_id={gw['id']}&limit=0")
    items = got if isinstance(got, list) else got.get("items", got.get("data", []))
    tools = [t for t in items if t.get("gatewayId", gw["id"]) == gw["id"]]
    if tools:
        break
    time.sleep(0.2)
if not tools:
    sys.exit("no tools discovered from the upstream")
names = {t.get("originalName") or t["name"]: t["name"] for t in tools}
print("tools:", json.dumps(names), file=sys.stderr)
if "read_database" not in names:
    sys.exit(f"upstream has no read_database tool: {sorted(names)}")
srv = call("POST", "/servers", {"server": {"name": "db_upstream_vserver",
                                           "description": "lockstep benchmark virtual server",
                                           "associated_tools": [t["id"] for t in tools]},
                                "visibility": "public"})
print("server:", json.dumps(srv)[:2000], file=sys.stderr)
# /servers/{id}/mcp answers with "Deprecation: true" and a Link to /v1/servers/{id}/mcp, but in
# 1.1.0 that /v1 path answers 404 for MCP: keep the old one.
print(f"{base}/servers/{srv['id']}/mcp {names['read_database']}")
PY
)" || fail "registering $upstream failed"
  set -f
  # shellcheck disable=SC2086
  set -- READY $out
  set +f
  [ $# = 3 ] || fail "unexpected registration output: '$out'"
  # shellcheck disable=SC2046
  record_pids "$STATE" $(descendants "$pid")
  echo "port=$port pid=$pid stateful=$stateful mcp_url=$2 tool=$3" > "$STATE/info.txt"
  log "ready after $((SECONDS - t0)) s (excluding install): $2 tool $3"
  trap - EXIT INT TERM HUP
  printf 'READY %s %s %s\n' "$2" "$token" "$3"
}

case "${1:-}" in
  start) [ $# = 3 ] || usage; cmd_start "$2" "$3" ;;
  stop)  [ $# = 2 ] || usage; [ -d "$2" ] || exit 0; cmd_stop "$(cd "$2" && pwd)" ;;
  *) usage ;;
esac
