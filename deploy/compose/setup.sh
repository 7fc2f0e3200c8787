#!/usr/bin/env bash
# Makes what compose.yaml mounts, in ./secrets (mode 600, git-ignored): the signing key
# pair, one token per server role, the gateways' API key file and session key, the
# dashboard bound to the provisioned data source, and bundle.tar.gz (the example
# policies, signed). Idempotent: existing secrets are kept, the bundle is rebuilt.
#   LOCKSTEP=path/to/lockstep ./setup.sh [policies-dir]
set -euo pipefail
cd "$(dirname "$0")"
LOCKSTEP="${LOCKSTEP:-lockstep}"
policies="${1:-../../examples/policies}"
umask 077
mkdir -p secrets/grafana-dashboards

random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
for t in publisher-token download-token status-token session-key; do
  [ -s "secrets/$t" ] || random > "secrets/$t"
done
if [ ! -s secrets/api-keys.yaml ]; then
  cat > secrets/api-keys.yaml <<KEYS
keys:
  - key: lsk_$(random)
    id: analyst-agent
    role: analyst
  - key: lsk_$(random)
    id: admin-agent
    role: admin
KEYS
fi
[ -s secrets/signing-key.pem ] || "$LOCKSTEP" keygen --alg ES256 -o secrets/signing-key.pem >/dev/null
# The containers run as uid 65532 and read these through bind mounts.
chmod 644 secrets/signing-key-pub.pem secrets/publisher-token secrets/download-token \
  secrets/status-token secrets/api-keys.yaml secrets/session-key

sed 's/\${DS_PROMETHEUS}/prometheus/g' ../grafana/lockstep-dashboard.json \
  > secrets/grafana-dashboards/lockstep-dashboard.json
chmod -R a+rX secrets/grafana-dashboards

"$LOCKSTEP" test "$policies"
"$LOCKSTEP" build -b "$policies" --signing-key secrets/signing-key.pem --signing-alg ES256 \
  --signing-key-id compose-key -o bundle.tar.gz
"$LOCKSTEP" verify bundle.tar.gz --verification-key secrets/signing-key-pub.pem \
  --verification-key-id compose-key
echo "setup: secrets in $(pwd)/secrets, bundle.tar.gz built; next: docker compose up -d --build"
