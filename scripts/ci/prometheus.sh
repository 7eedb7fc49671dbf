#!/usr/bin/env bash
# Makes sure promtool is on this machine: the tests check and exercise the alert rules in
# deploy/prometheus/ with it. It comes with Debian's prometheus package, installed without its
# recommended exporters and without starting the service it ships. Idempotent: exits at once when
# promtool is there.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "prometheus.sh: promtool is missing and installing it needs root" >&2; exit 1; fi

# No service may start from the package's scripts: a policy-rc.d saying "no" while installing,
# unless the machine already has one.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"; made_policy=1
fi
trap 'if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi' EXIT

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends prometheus >&2; }
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! install; then
  apt-get update -q >&2
  install
fi
promtool --version >&2
