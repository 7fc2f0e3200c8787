#!/usr/bin/env bash
# Benchmarks recorded in BENCHMARKS.md (not part of CI):
#   1. build+sign and verify+load of a bundle whose data.json is ~100 MB (wall time, peak RSS)
#   2. per-decision latency of the three-layer MCP decision, in process (criterion)
#   3. bundle server: 1000 held long polls woken by one PUT (latency per poll), and the
#      server's RSS with 10,000 idle long polls held (crates/server/examples/longpoll_bench.rs)
#   4. agent: /v1/data decisions per second and latency over loopback, and time from publish
#      to activation for 1 MB and 100 MB bundles (crates/agent/examples/agent_bench.rs)
#   5. gateway: added latency over calling the upstream directly, throughput with 16 sessions,
#      RSS with 1,000 sessions, and the same for IBM ContextForge in the same run
#      (crates/gateway/examples/gateway_bench.rs; GATEWAY_BENCH_CONTEXTFORGE=0 leaves it out)
#   6. identity: OAuth access token checks and upstream token minting, per call, in process
#      (crates/gateway/examples/identity_bench.rs)
#   7. cutover: the spread between the first and last of 10 and 100 instances switching to a
#      revision with 1 MB of data, synchronized cut-over on and off
#      (crates/sync/examples/cutover_bench.rs)
# Usage: scripts/bench.sh [bundle|decision|server|agent|gateway|identity|cutover|all]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
work="${BENCH_DIR:-target/bench-work}"
mkdir -p "$work"
cargo build --release -q -p lockstep
bin="$(pwd)/target/release/lockstep"

measure() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null
  read -r secs kb < "$work/time.txt"
  printf '%-28s wall %6.2f s   peak RSS %7.1f MB\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}

if [ "$what" = bundle ] || [ "$what" = all ]; then
  src="$work/big"
  if [ ! -f "$src/mcp/inventory/data.json" ]; then
    rm -rf "$src" && mkdir -p "$src/mcp/inventory" "$src/mcp/roles"
    cp -r examples/policies/. "$src/"
    # ~100 MB of resource inventory: 650k objects with nested attributes.
    python3 - "$src/mcp/inventory/data.json" <<'PY'
import json, sys, random
random.seed(7)
items = {}
for i in range(650_000):
    items[f"res-{i:07d}"] = {
        "owner": f"team-{random.randint(0, 999)}",
        "tags": [f"t{random.randint(0, 99)}" for _ in range(4)],
        "size": random.randint(0, 10**9),
        "path": f"/srv/data/{random.randint(0, 99999)}/{i}.parquet",
        "readonly": random.random() < 0.5,
    }
with open(sys.argv[1], "w") as f:
    json.dump(items, f)
PY
  fi
  ls -l "$src/mcp/inventory/data.json" | awk '{printf "data.json: %.1f MB\n", $5/1048576}'
  [ -f "$work/k.pem" ] || "$bin" keygen --alg ES256 -o "$work/k.pem" --force >/dev/null
  measure "build+sign (ES256)" "$bin" build "$src" --revision bench --signing-key "$work/k.pem" \
    --signing-alg ES256 -o "$work/big.tar.gz"
  ls -l "$work/big.tar.gz" | awk '{printf "bundle.tar.gz: %.1f MB\n", $5/1048576}'
  measure "verify+load (ES256)" "$bin" verify "$work/big.tar.gz" --verification-key "$work/k-pub.pem" \
    --signing-alg ES256 --load
fi

if [ "$what" = decision ] || [ "$what" = all ]; then
  cargo bench -p lockstep-policy --bench decision
fi

if [ "$what" = server ] || [ "$what" = all ]; then
  cargo build --release -q -p lockstep-server --example longpoll_bench
  # 10,000 connections on each side (the server inherits the limit).
  hard="$(ulimit -Hn)"
  if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
  target/release/examples/longpoll_bench --server-bin "$bin" --polls 1000 --rounds 5 --idle 10000
fi

if [ "$what" = agent ] || [ "$what" = all ]; then
  cargo build --release -q -p lockstep-agent --example agent_bench
  BENCH_SECONDS="${BENCH_SECONDS:-8}" target/release/examples/agent_bench all
fi

if [ "$what" = gateway ] || [ "$what" = all ]; then
  cargo build --release -q -p lockstep-gateway --example gateway_bench
  cf=(--contextforge)
  [ "${GATEWAY_BENCH_CONTEXTFORGE:-1}" = 0 ] && cf=()
  target/release/examples/gateway_bench --lockstep-bin "$bin" "${cf[@]}" \
    --n "${GATEWAY_BENCH_N:-2000}" --seconds "${BENCH_SECONDS:-8}" --sessions 1000
fi

if [ "$what" = identity ] || [ "$what" = all ]; then
  cargo build --release -q -p lockstep-gateway --example identity_bench
  target/release/examples/identity_bench --n 20000
fi

if [ "$what" = cutover ] || [ "$what" = all ]; then
  cargo build --release -q -p lockstep-sync --example cutover_bench
  target/release/examples/cutover_bench --instances 10,100 --announce-ms 500,3000 \
    --data-bytes 1048576 --rounds "${CUTOVER_ROUNDS:-3}"
fi
