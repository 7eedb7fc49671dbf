#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (playwright-core drives it; no test
# tool downloads a browser of its own). Idempotent: exits at once when /usr/bin/chromium runs.
set -euo pipefail
say() { echo "chromium.sh: $*" >&2; }
if [ -x /usr/bin/chromium ] && /usr/bin/chromium --version >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then say "chromium is missing and installing it needs root"; exit 1; fi
say "installing chromium"
export DEBIAN_FRONTEND=noninteractive
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt-get install -y -q chromium >&2; then
  apt-get update -q >&2
  apt-get install -y -q chromium >&2
fi
/usr/bin/chromium --version >&2
