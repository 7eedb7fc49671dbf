#!/bin/sh
# Follow mode: nginx sends to every address the app's name resolves to now, for orchestrators whose
# DNS lists the app's replicas as they come and go (Docker Swarm: a service in dnsrr mode or
# tasks.<service>; Kubernetes: a headless Service). nginx resolves an upstream's names once, at
# start: open-source nginx re-resolves them (`server … resolve`) only from 1.27.3, and Debian's is
# 1.22. A variable in proxy_pass re-resolves on any version but gives up upstream keepalive (a new
# connection per request: 30-70% fewer requests per second here, and timeouts). So this looks the
# name up every APP_UPSTREAM_FOLLOW seconds and, when the set changed, rewrites the server list of a
# second nginx (templates/follow.conf) and reloads it. The nginx clients talk to is never reloaded:
# a reload closes its idle client connections, and a client that sends on one at that moment sees
# it closed (4 of 3135 requests failed that way in a rolling update when one nginx did both).
#   follow-upstream.sh start   write the list and start the second nginx (before the front starts)
#   follow-upstream.sh watch   keep the list current (in the background, for the container's life)
# A look-up that finds nothing keeps the last list: with no replica left there is nothing better
# to send to, and a passing DNS failure must not empty a working upstream.
set -u
conf=/etc/nginx/koa-auth-stack/follow.conf
list=/etc/nginx/conf.d/tasks.servers
host=${APP_UPSTREAM%:*}
port=${APP_UPSTREAM##*:}

say() { echo "koa-auth-stack: $*" >&2; }
follower() { nginx -c "$conf" "$@"; }
running() { [ -s /var/run/koa-auth-stack/follow.pid ] && kill -0 "$(cat /var/run/koa-auth-stack/follow.pid)" 2>/dev/null; }

# The name's IPv4 addresses, sorted, on one line ("" when it has none).
lookup() { getent ahostsv4 "$host" | awk '{ print $1 }' | sort -u | tr '\n' ' ' | sed 's/ $//'; }

# write ADDRESSES: the second nginx's server list.
write() {
  {
    echo "# $host, looked up by follow-upstream.sh"
    echo "# addresses: $1"
    # Nothing to send to yet: 503 (no live upstream) until the app is there.
    if [ -z "$1" ]; then echo "server 127.0.0.1:$port down;"; fi
    for address in $1; do echo "server $address:$port max_fails=1 fail_timeout=5s;"; done
  } >"$list.tmp"
  mv "$list.tmp" "$list"
}

case "${1:-}" in
  start)
    mkdir -p /var/run/koa-auth-stack
    current=$(lookup)
    write "$current"
    follower -t -q
    follower
    say "app upstream: $host → ${current:-(none yet)}"
    ;;
  watch)
    current=$(sed -n 's/^# addresses: //p' "$list")
    while sleep "$APP_UPSTREAM_FOLLOW"; do
      if ! running; then
        say "the upstream nginx is gone; starting it again"
        follower || continue
      fi
      next=$(lookup)
      if [ -z "$next" ] || [ "$next" = "$current" ]; then continue; fi
      write "$next"
      # If the reload fails, the change is tried again next time.
      if follower -t -q 2>/dev/null && follower -s reload 2>/dev/null; then
        current=$next
        say "app upstream: $host → $next (reloaded)"
      fi
    done
    ;;
  *)
    echo "usage: follow-upstream.sh start|watch" >&2
    exit 2
    ;;
esac
