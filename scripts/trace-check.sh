#!/usr/bin/env bash
# Two node processes export traces over OTLP/gRPC to a real collector (rotel-agent, from the PyPI
# package `rotel`); checks that the received spans link across the nodes (scripts/rotel_spans.py).
# Usage: scripts/trace-check.sh [ROTEL_AGENT_BINARY]   (default: rotel-agent from a local venv)
set -euo pipefail
cd "$(dirname "$0")/.."
rotel=${1:-}
if [ -z "$rotel" ]; then
  venv=target/ci-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q rotel
  rotel=$("$venv/bin/python" -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
fi
cargo build -q -p telemetry-node
bin=target/debug/telemetry-node
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port)
"$rotel" start --exporter blackhole --debug-log traces --debug-log-verbosity detailed \
  --otlp-grpc-endpoint "127.0.0.1:$grpc" --otlp-http-endpoint "127.0.0.1:$(port)" > "$work/rotel.out" 2>&1 &
rotel_pid=$!
sleep 1
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$grpc" OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
  OTEL_TRACES_SAMPLER=parentbased_always_on OTEL_BSP_SCHEDULE_DELAY=200
b_addr="127.0.0.1:$(port)"
"$bin" --node-name node-b --data-dir "$work/b" --http-addr 127.0.0.1:0 --no-stream --partitions 8 \
  --cluster-addr "$b_addr" --seeds "$b_addr" --cluster-cookie trace > "$work/b.out" 2> "$work/b.log" &
pids+=($!)
sleep 1
"$bin" --node-name node-a --data-dir "$work/a" --http-addr 127.0.0.1:0 --partitions 8 \
  --cluster-addr "127.0.0.1:$(port)" --seeds "$b_addr" --cluster-cookie trace \
  --rate 2000 --passes 1 > "$work/a.out" 2> "$work/a.log" &
a_pid=$!
pids+=($a_pid)
until grep -qs listening "$work/a.out"; do sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/a.out")
for _ in $(seq 1 100); do
  stored=$(curl -s "$url/api/v1/cluster" | grep -o '"samples_stored":[0-9]*' | tail -1 | cut -d: -f2)
  [ "${stored:-0}" -ge 1600 ] && break
  sleep 0.2
done
curl -sf "$url/api/v1/gpus" > /dev/null
kill -TERM "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true
pids=()
sleep 1
kill -TERM $rotel_pid; wait $rotel_pid 2>/dev/null || true
python3 scripts/rotel_spans.py "$work/rotel.out"
