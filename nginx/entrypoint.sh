#!/bin/sh
# Renders the configuration from templates and the environment, picks plain HTTP or TLS (when a
# certificate and key are mounted at /etc/nginx/certs/tls.crt and tls.key), checks it, then runs
# the command (nginx in the foreground).
set -eu
src=/etc/nginx/koa-auth-stack
out=/etc/nginx/conf.d
certs=/etc/nginx/certs

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
      "$src/$1" > "$out/$2"
}

rm -f "$out"/*.conf "$out"/*.locations "$out"/*.inc "$out"/*.servers
render common.conf 00-common.conf
render api.locations api.locations
render security-headers.inc security-headers.inc
render errors.inc errors.inc
if [ -s "$certs/tls.crt" ] && [ -s "$certs/tls.key" ]; then
  render https.conf 10-https.conf
  echo "koa-auth-stack: TLS on (port 443, HTTP/2), port 80 redirects" >&2
else
  render http.conf 10-http.conf
  echo "koa-auth-stack: plain HTTP on port 80 (mount tls.crt and tls.key in $certs for TLS)" >&2
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
