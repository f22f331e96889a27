#!/usr/bin/env bash
# Runs the container image's entry command and health check outside a
# container, for machines where no image can be built: the binary starts as
# the Dockerfile's ENTRYPOINT + CMD with its environment (the volume replaced
# by a temp dir, the port by a free one), the HEALTHCHECK command must pass,
# /readyz and /metrics must answer, and SIGTERM must drain and exit 0 within
# the grace period the unit file and the Kubernetes example give (75 s).
#
# Usage: deploy/smoke-test.sh [path/to/chronos-server]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/chronos-server}"
[[ -x "$binary" ]] || { echo "no binary at $binary (cargo build -p chronos-server)" >&2; exit 2; }
dockerfile="$root/Dockerfile"

# The Dockerfile's JSON-array instructions, as words.
json_words() { sed -n "s/^$1 \[\(.*\)\]$/\1/p" "$dockerfile" | tr -d '"' | tr ',' ' '; }
read -r -a entrypoint <<<"$(json_words ENTRYPOINT)"
read -r -a cmd <<<"$(json_words CMD)"
read -r -a health <<<"$(sed -n 's/^ \+CMD \[\(.*\)\]$/\1/p' "$dockerfile" | tr -d '"' | tr ',' ' ')"
[[ "${entrypoint[0]}" == /usr/local/bin/chronos-server ]] || { echo "unexpected ENTRYPOINT ${entrypoint[*]}" >&2; exit 1; }
[[ "${#health[@]}" -gt 0 ]] || { echo "no HEALTHCHECK CMD found" >&2; exit 1; }

volume="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$volume"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)"

# The image's ENV, with the volume and the port moved.
cd "$volume"
env -i PATH="$PATH" \
    CHRONOS_BIND="127.0.0.1:$port" \
    CHRONOS_LOG_FORMAT=json \
    DATABASE_URL="sqlite://$volume/chronos.db" \
    "$binary" "${cmd[@]}" >"$volume/server.log" 2>&1 &
pid=$!

# The HEALTHCHECK command, with this machine's wget and the moved port.
health[0]="$(command -v wget)"
health=("${health[@]/127.0.0.1:8080/127.0.0.1:$port}")
for _ in $(seq 1 100); do
    if "${health[@]}" 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$volume/server.log" >&2; echo "the server exited" >&2; exit 1; }
    sleep 0.2
done
"${health[@]}" || { echo "HEALTHCHECK failed: ${health[*]}" >&2; exit 1; }
echo "ok: HEALTHCHECK ${health[*]}"

wget -q -O /dev/null "http://127.0.0.1:$port/readyz" && echo "ok: /readyz 200"
wget -q -O - "http://127.0.0.1:$port/metrics" | grep -q '^# HELP chronos_build_info' && echo "ok: /metrics has HELP and build info"
[[ -f "$volume/chronos.db" ]] && echo "ok: the SQLite database is in the volume"

kill -TERM "$pid"
for _ in $(seq 1 375); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then echo "still running 75 s after SIGTERM" >&2; exit 1; fi
wait "$pid" && echo "ok: SIGTERM drained and exited 0"
