#!/usr/bin/env bash
# One unthrottled pass of a gen-csv file through release nodes, CSV → queryable.
# Usage: [NODES=3] scripts/ingest-throughput.sh [ROWS] [extra flags for the streaming node...]
# With NODES > 1, NODES-1 nodes that only store (--no-stream) form a cluster on loopback with the
# streaming node (seeds = the first of them), all on this machine. Prints rows, seconds from the
# streaming node's start until /api/v1/cluster reports every sample stored (cluster-wide), the
# samples/s, and the peak RSS of each node. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}; shift || true
nodes=${NODES:-1}
cargo build --release -q -p telemetry-node
bin=target/release/telemetry-node
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
hosts=$(( (rows + 7999) / 8000 ))
"$bin" gen-csv --rows "$rows" --hosts "$hosts" -o "$work/in.csv" 2>/dev/null
expected=$(( $(wc -l < "$work/in.csv") - 1 ))
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cluster=()
if [ "$nodes" -gt 1 ]; then
  seed="127.0.0.1:$(port)"
  for i in $(seq 1 $((nodes - 1))); do
    addr=$seed; [ "$i" -gt 1 ] && addr="127.0.0.1:$(port)"
    "$bin" --node-name "store-$i" --data-dir "$work/store-$i" --http-addr 127.0.0.1:0 --no-stream \
      --cluster-addr "$addr" --seeds "$seed" --cluster-cookie bench > "$work/out-$i" 2> "$work/log-$i" &
    pids+=($!)
  done
  sleep 2
  cluster=(--cluster-addr "127.0.0.1:$(port)" --seeds "$seed" --cluster-cookie bench)
fi
start=$(date +%s.%N)
"$bin" --node-name streamer --data-dir "$work/data" --http-addr 127.0.0.1:0 --csv "$work/in.csv" \
  --rate 0 --passes 1 --timestamps csv "${cluster[@]}" "$@" > "$work/out" 2> "$work/log" &
pid=$!
pids+=($pid)
until grep -q listening "$work/out"; do sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/out")
while true; do
  # The cluster-wide total follows the members' own counts in the JSON: the last match.
  stored=$(curl -s "$url/api/v1/cluster" | grep -o '"samples_stored":[0-9]*' | tail -1 | cut -d: -f2)
  [ "${stored:-0}" -ge "$expected" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
rss=""
for p in "${pids[@]}"; do rss="$rss $(( $(grep VmHWM /proc/$p/status | awk '{print $2}') / 1024 ))"; done
python3 -c "r=$expected; s=$end-$start; print(f'nodes=$nodes rows={r} seconds={s:.2f} samples_per_s={r/s:,.0f} peak_rss_mib=[{\",\".join(\"$rss\".split())}]')"
