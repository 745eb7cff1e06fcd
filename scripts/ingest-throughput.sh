#!/usr/bin/env bash
# One unthrottled pass of a gen-csv file through a release node, CSV → queryable.
# Usage: scripts/ingest-throughput.sh [ROWS] [extra node flags...]
# Prints rows, seconds from process start until /api/v1/cluster reports every sample stored,
# and samples/s. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}; shift || true
cargo build --release -q -p telemetry-node
bin=target/release/telemetry-node
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
hosts=$(( (rows + 7999) / 8000 ))
"$bin" gen-csv --rows "$rows" --hosts "$hosts" -o "$work/in.csv" 2>/dev/null
expected=$(( $(wc -l < "$work/in.csv") - 1 ))
start=$(date +%s.%N)
"$bin" --data-dir "$work/data" --http-addr 127.0.0.1:0 --csv "$work/in.csv" --rate 0 --passes 1 \
  --timestamps csv "$@" > "$work/out" 2> "$work/log" &
pid=$!
until grep -q listening "$work/out"; do sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/out")
while true; do
  stored=$(curl -s "$url/api/v1/cluster" | grep -o '"samples_stored":[0-9]*' | tail -1 | cut -d: -f2)
  [ "${stored:-0}" -ge "$expected" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
rss=$(grep VmHWM /proc/$pid/status | awk '{print $2}')
python3 -c "import sys; r=$expected; s=$end-$start; print(f'rows={r} seconds={s:.2f} samples_per_s={r/s:,.0f} peak_rss_mib={$rss/1024:.0f}')"
