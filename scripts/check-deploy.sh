#!/usr/bin/env bash
# Checks deploy/: the Prometheus alerting rules (promtool check + unit tests) and the
# Grafana dashboard (valid JSON; every panel query parses as PromQL, checked by
# promtool after substituting Grafana's variables). Installs promtool (Debian package
# `prometheus`) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "check-deploy: promtool missing, installing the prometheus package" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q && $sudo apt-get install -y -q prometheus
fi

promtool check rules deploy/prometheus/lockstep-rules.yml
promtool test rules deploy/prometheus/lockstep-rules.test.yml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - deploy/grafana/lockstep-dashboard.json "$tmp/dashboard-queries.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rules = []
for p in d["panels"]:
    for t in p.get("targets", []):
        e = (t["expr"].replace("$__rate_interval", "5m").replace("$bundle", ".*")
             .replace("$job", ".*"))
        rules.append(f"      - record: panel_{p['id']}_{t['refId']}\n        expr: {json.dumps(e)}\n")
if not rules:
    sys.exit("no panel queries in the dashboard")
open(sys.argv[2], "w").write("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
print(f"dashboard: {len(rules)} queries in {len(d['panels'])} panels")
PY
promtool check rules "$tmp/dashboard-queries.yml"
