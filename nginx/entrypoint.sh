#!/bin/sh
# Renders the configuration from templates and the environment, picks plain HTTP or TLS (when a
# certificate and key are there: TLS_CERT_FILE and TLS_KEY_FILE, by default /etc/nginx/certs/tls.crt
# and tls.key, where compose and Kubernetes mount them; Swarm points them at its secrets), checks it,
# then runs the command (nginx in the foreground).
set -eu
src=/etc/nginx/koa-auth-stack
out=/etc/nginx/conf.d

# "listen … http2" is deprecated since nginx 1.25.1 in favour of "http2 on;"; support both.
version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if printf '%s\n1.25.1\n' "$version" | sort -V -C 2>/dev/null && [ "$version" != 1.25.1 ]; then
  HTTP2_LISTEN=http2; HTTP2_DIRECTIVE=
else
  HTTP2_LISTEN=; HTTP2_DIRECTIVE='http2 on;'
fi
if [ "$HTTPS_PORT" = 443 ]; then HTTPS_PORT_SUFFIX=; else HTTPS_PORT_SUFFIX=":$HTTPS_PORT"; fi

render() {
  sed -e "s|\${APP_UPSTREAM}|$APP_UPSTREAM|g" \
      -e "s|\${LOGIN_RATE}|$LOGIN_RATE|g" -e "s|\${LOGIN_BURST}|$LOGIN_BURST|g" \
      -e "s|\${TOKEN_RATE}|$TOKEN_RATE|g" -e "s|\${TOKEN_BURST}|$TOKEN_BURST|g" \
      -e "s|\${CLIENT_MAX_BODY_SIZE}|$CLIENT_MAX_BODY_SIZE|g" \
      -e "s|\${HTTP2_LISTEN}|$HTTP2_LISTEN|g" -e "s|\${HTTP2_DIRECTIVE}|$HTTP2_DIRECTIVE|g" \
      -e "s|\${HTTPS_PORT_SUFFIX}|$HTTPS_PORT_SUFFIX|g" \
      -e "s|\${TLS_CERT_FILE}|$TLS_CERT_FILE|g" -e "s|\${TLS_KEY_FILE}|$TLS_KEY_FILE|g" \
      "$src/$1" > "$out/$2"
}

# REAL_IP_FROM: the addresses (CIDR ranges, comma- or space-separated) of proxies or load balancers
# in front whose REAL_IP_HEADER names the client. Requests from them count as their client's (rate
# limits, logs, what the app is told); from anyone else, the header is ignored. Empty: nobody's.
real_ip() {
  echo "# Proxies in front whose $REAL_IP_HEADER names the client (REAL_IP_FROM); none when empty."
  ranges=$(printf '%s' "${REAL_IP_FROM:-}" | tr ',' ' ')
  [ -n "$(printf '%s' "$ranges" | tr -d ' ')" ] || return 0
  case "$REAL_IP_HEADER" in
    *[!A-Za-z0-9-]* | '') echo "koa-auth-stack: REAL_IP_HEADER must be a header name, not '$REAL_IP_HEADER'" >&2; return 1 ;;
  esac
  for range in $ranges; do
    if ! printf '%s' "$range" | grep -Eq '^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)(/[0-9]{1,3})?$'; then
      echo "koa-auth-stack: REAL_IP_FROM: '$range' is not an address or CIDR range" >&2
      return 1
    fi
    echo "set_real_ip_from $range;"
  done
  echo "real_ip_header $REAL_IP_HEADER;"
  # Of a chain of trusted proxies, the address the first one saw: the rightmost untrusted entry.
  echo "real_ip_recursive on;"
}

# ACCESS_LOG_BUFFER: the access log's write buffer (say 32k), flushed at least every second; empty:
# a write per line. Every request still has its line; buffered, Docker's log path handles a write per
# 32 KiB instead of one per line (scripts/bench/log-path.sh).
access_log() {
  case "${ACCESS_LOG_BUFFER:-}" in
    '') echo 'access_log /dev/stdout json;' ;;
    *[!0-9kKmM]* | [!0-9]*) echo "koa-auth-stack: ACCESS_LOG_BUFFER must be a size such as 32k, not '$ACCESS_LOG_BUFFER'" >&2; return 1 ;;
    *) echo "access_log /dev/stdout json buffer=$ACCESS_LOG_BUFFER flush=1s;" ;;
  esac
}

rm -f "$out"/*.conf "$out"/*.locations "$out"/*.inc "$out"/*.servers
access_log >"$out/access-log.inc"
render common.conf 00-common.conf
real_ip >"$out/00-real-ip.conf"
render api.locations api.locations
render security-headers.inc security-headers.inc
render errors.inc errors.inc
if [ -s "$TLS_CERT_FILE" ] && [ -s "$TLS_KEY_FILE" ]; then
  render https.conf 10-https.conf
  echo "koa-auth-stack: TLS on (port 443, HTTP/2, $TLS_CERT_FILE), port 80 redirects" >&2
else
  render http.conf 10-http.conf
  echo "koa-auth-stack: plain HTTP on port 80 (mount tls.crt and tls.key in /etc/nginx/certs, or set TLS_CERT_FILE and TLS_KEY_FILE, for TLS)" >&2
fi
if grep -q '^set_real_ip_from' "$out/00-real-ip.conf"; then
  echo "koa-auth-stack: client addresses from $REAL_IP_HEADER when sent by $(grep '^set_real_ip_from' "$out/00-real-ip.conf" | cut -d' ' -f2 | tr -d ';' | tr '\n' ' ')" >&2
fi
# The app (upstream "app"): APP_UPSTREAM as given; or, with APP_UPSTREAM_FOLLOW=<seconds>, a second
# nginx that sends to every address APP_UPSTREAM's name has, kept current as replicas come and go
# (follow-upstream.sh).
if [ -n "${APP_UPSTREAM_FOLLOW:-}" ]; then
  /koa-auth-stack-follow-upstream.sh start
  echo "server unix:/var/run/koa-auth-stack/app.sock max_fails=0;" >"$out/app.servers"
else
  echo "server $APP_UPSTREAM max_fails=0;" >"$out/app.servers"
fi
nginx -t -q
if [ -n "${APP_UPSTREAM_FOLLOW:-}" ]; then /koa-auth-stack-follow-upstream.sh watch & fi
exec "$@"
