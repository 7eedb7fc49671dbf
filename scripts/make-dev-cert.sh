#!/usr/bin/env bash
# A self-signed certificate for local TLS: writes tls.crt and tls.key (default: nginx/certs/), which
# nginx serves on 443 when mounted (docker compose -f docker-compose.yml -f docker-compose.tls.yml up).
# Usage: scripts/make-dev-cert.sh [out-dir] [hostname]
set -euo pipefail
out=${1:-"$(dirname "$0")/../nginx/certs"}
host=${2:-localhost}
mkdir -p "$out"
# An address (the tests use the Docker bridge's) is named as one; a host name as a DNS name.
if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=$host" -addext "subjectAltName=$san,DNS:localhost,IP:127.0.0.1" \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
# nginx's master reads the key as root, then drops privileges: 0644 lets any nginx image read it.
chmod 0644 "$out/tls.key" "$out/tls.crt"
echo "wrote $out/tls.crt and $out/tls.key for $host (self-signed: clients must trust it or skip verification)"
