#!/bin/sh
# Starts (or stops) the example application's two local hosts, h1 on 127.0.0.1:8081 and h2 on
# 127.0.0.1:8082, for README's rollback example.   examples/app/hosts.sh start|stop
set -eu
here=$(cd "$(dirname "$0")" && pwd)
run="$here/../../.ferry/hosts"
mkdir -p "$run"
case "${1:-start}" in
  start)
    for h in "h1 8081" "h2 8082"; do
      set -- $h
      if [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; then continue; fi
      python3 "$here/host.py" "$1" "$2" >/dev/null 2>&1 &
      echo $! > "$run/$1.pid"
    done
    # Wait (up to 5 s) until both answer.
    for i in $(seq 1 50); do
      if python3 -c 'import urllib.request as u; [u.urlopen(f"http://127.0.0.1:{p}/version", timeout=1) for p in (8081, 8082)]' 2>/dev/null; then
        echo "example hosts h1 (:8081) and h2 (:8082) are up"; exit 0
      fi
      sleep 0.1
    done
    echo "example hosts did not start" >&2; exit 1 ;;
  stop)
    for h in h1 h2; do
      [ -f "$run/$h.pid" ] && kill "$(cat "$run/$h.pid")" 2>/dev/null || true
      rm -f "$run/$h.pid"
    done ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
