#!/usr/bin/env bash
# Makes sure a Docker engine is usable on this machine (CI and developers alike).
# Fresh machines have no Docker: install Debian's docker.io (engine + CLI), docker-compose (v1),
# debootstrap (used by deploy/airgap/build.sh, since no image registry is reachable), and iproute2
# and iptables (the swarm test's engines in network namespaces: test/support/engines.ts), then
# start dockerd in the background (there is no systemd) and wait until it answers.
# Idempotent and quick: exits at once when the packages are there and `docker info` works.
set -euo pipefail

LOG=/var/log/dockerd.log
PACKAGES=(docker.io docker-compose debootstrap iproute2 iptables)
WAIT_SECONDS=${DOCKER_WAIT_SECONDS:-60}

say() { echo "docker.sh: $*" >&2; }
docker_ok() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done

# Fast path: everything is installed and the engine already answers.
if [ "${#missing[@]}" -eq 0 ] && docker_ok; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  say "installing packages (${missing[*]:-none}) or starting docker needs root"; exit 1
fi

# 1. Install whatever Debian packages are missing.
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # With Recommends (apparmor, cgroupfs-mount, ...), as on the machines where this was proven.
  apt_install() { apt-get install -y -q "${missing[@]}" >&2; }
  # Only refresh the package lists when there are none or the install fails with the old ones.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install; then
    apt-get update -q >&2
    apt_install
  fi
fi

# 2. Start dockerd unless one is already running (e.g. still starting up).
if ! pgrep -x dockerd >/dev/null; then
  # A pid file left by a dockerd that died would make the new one refuse to start.
  rm -f /var/run/docker.pid
  say "starting dockerd (log: $LOG)"
  # setsid + nohup: the daemon must outlive this script and the shell/job that ran it.
  setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
fi

# 3. Wait for the engine to answer.
for ((i = 0; i < WAIT_SECONDS; i++)); do
  if docker_ok; then
    say "docker is up ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  if ! pgrep -x dockerd >/dev/null && [ "$i" -ge 2 ]; then break; fi  # it died: no point waiting
  sleep 1
done

say "ERROR: the Docker engine is not usable: 'docker info' still fails (waited up to ${WAIT_SECONDS}s)."
if pgrep -x dockerd >/dev/null; then say "dockerd is running but not answering"; else say "dockerd is not running"; fi
# /var/log/docker.log: where Debian's init script logs, if the package's postinst started it.
for log in "$LOG" /var/log/docker.log; do
  if [ -s "$log" ]; then say "last lines of $log:"; tail -n 30 "$log" >&2; fi
done
exit 1
