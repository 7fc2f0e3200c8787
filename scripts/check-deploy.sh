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

# The pipeline a team copies (deploy/github-actions, compose, k8s, Dockerfiles), checked by
# the validators the registries offer (scripts/install-deploy-linters.sh). No container
# engine runs here: the images are not built and the compose file is not started; the
# configs they mount are run as processes by crates/cli/tests/deploy.rs instead.
scripts/install-deploy-linters.sh
D="${LOCKSTEP_DEPLOY_LINTERS_DIR:-target/deploy-linters}"
PATH="$D/bin:$PATH"
actionlint -no-color -shellcheck="$D/venv/bin/shellcheck" -pyflakes= \
  deploy/github-actions/policy-deploy.yml
echo "actionlint: deploy/github-actions/policy-deploy.yml ok"
hadolint --no-color deploy/Dockerfile deploy/compose/mcp-server/Dockerfile
echo "hadolint: deploy/Dockerfile, deploy/compose/mcp-server/Dockerfile ok"
kubernetes-validate --quiet --strict --no-warn -k 1.33 \
  deploy/k8s/namespace.yaml deploy/k8s/server.yaml deploy/k8s/gateway.yaml deploy/k8s/agent-sidecar.yaml
echo "kubernetes-validate --strict (1.33): deploy/k8s ok"
dclint --no-color -c "$D/dclint.json" deploy/compose/compose.yaml
echo "dclint: deploy/compose/compose.yaml ok"
yamllint -d '{extends: relaxed, rules: {line-length: disable, trailing-spaces: disable}}' \
  deploy/compose deploy/k8s deploy/github-actions deploy/prometheus
echo "yamllint: deploy ok"
