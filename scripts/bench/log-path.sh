#!/usr/bin/env bash
# What one access-log line costs on its way through Docker (issue 19): a container writes LINES lines
# shaped like nginx's JSON access log to stdout, one write per line (nginx unbuffered) or in 32 KiB
# writes (nginx's `buffer=32k`), under each logging driver; the CPU time dockerd and the container's
# containerd-shim spend meanwhile (/proc, all threads), per line. Rounds alternate the variants, so
# the machine's drift falls on all of them. Also checks `docker logs` shows every line.
#   bash scripts/bench/log-path.sh [LINES] [ROUNDS]
set -euo pipefail
LINES=${1:-100000}
ROUNDS=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1091
source "$here/deploy/airgap/images.env"
IMAGE=${NGINX_IMAGE:-nginx:1.22}
LINE='{"time":"2026-12-05T23:00:00+00:00","request_id":"0123456789abcdef0123456789abcdef","remote_addr":"10.199.77.2","peer_addr":"10.199.77.2","method":"GET","uri":"/api/me/","protocol":"HTTP/1.1","status":200,"bytes":32,"request_time":0.002,"upstream_addr":"unix:/run/app/app.sock","upstream_status":"200","upstream_time":"0.002","user_agent":"wrk"}'
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
dockerd_pid=$(pgrep -xo dockerd)
run() { # driver, chunk: line | 32k
  local driver=$1 chunk=$2 name="kas-logpath-$$-$RANDOM" writer
  if [[ $chunk == line ]]; then
    # one write(2) per line, as nginx without a buffer
    writer="i=0; while [ \$i -lt $LINES ]; do echo '$LINE'; i=\$((i+1)); done"
  else
    # ~32 KiB writes, as nginx with buffer=32k (the lines are the same)
    writer="yes '$LINE' | head -n $LINES | dd obs=32k status=none"
  fi
  docker create --name "$name" --log-driver "$driver" --entrypoint sh "$IMAGE" -c "sleep 1; $writer; sleep 1" >/dev/null
  docker start "$name" >/dev/null
  local id shim d0 s0
  id=$(docker inspect -f '{{.Id}}' "$name")
  shim=$(pgrep -f "containerd-shim.* -id $id" | head -1)
  d0=$(ticks "$dockerd_pid"); s0=$(ticks "$shim")
  docker wait "$name" >/dev/null
  local d1 s1 shown
  d1=$(ticks "$dockerd_pid"); s1=$(ticks "$shim" 2>/dev/null || echo "$s0")
  shown=$(docker logs "$name" 2>&1 | grep -c '"request_id"' || true)
  docker rm -f "$name" >/dev/null
  # ticks are 10 ms; µs per line
  echo "$driver $chunk $(( (d1 - d0) * 10000 / LINES )) $(( (s1 - s0) * 10000 / LINES )) $shown"
}
echo "lines: $LINES per run; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| driver | writes | dockerd µs/line | shim µs/line | lines in docker logs |"
echo "|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  for v in "json-file line" "local line" "json-file 32k" "local 32k"; do
    # shellcheck disable=SC2086
    run $v | awk '{ printf "| %s | %s | %s | %s | %s |\n", $1, ($2 == "line" ? "one per line" : "32 KiB"), $3, $4, $5 }'
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
