#!/usr/bin/env bash
# Times a decommission: three release nodes on loopback store ROWS samples (about a third each),
# then telemetry-2 is decommissioned through the CLI. Prints its share and the time it took.
# Usage: scripts/decommission-time.sh [ROWS]   (default 3000000: about 1 M samples on the node)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-3000000}
cargo build --release -q -p telemetry-node
bin=target/release/telemetry-node
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$bin" gen-csv --rows "$rows" --hosts $(( (rows + 7999) / 8000 )) -o "$work/in.csv" 2>/dev/null
expected=$(( $(wc -l < "$work/in.csv") - 1 ))
addrs=("127.0.0.1:$(port)" "127.0.0.1:$(port)" "127.0.0.1:$(port)")
seeds=$(IFS=,; echo "${addrs[*]}")
for i in 0 1 2; do
  extra=(--no-stream)
  [ "$i" = 0 ] && extra=(--csv "$work/in.csv" --rate 0 --passes 1 --timestamps csv)
  "$bin" --node-name "telemetry-$i" --data-dir "$work/n$i" --http-addr 127.0.0.1:0 \
    --cluster-addr "${addrs[$i]}" --seeds "$seeds" --cluster-cookie bench "${extra[@]}" \
    > "$work/out$i" 2> "$work/log$i" &
  pids+=($!)
done
until grep -qs listening "$work/out0"; do sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out0")
while true; do
  stored=$(curl -s "$url/api/v1/cluster" | grep -o '"samples_stored":[0-9]*' | tail -1 | cut -d: -f2)
  [ "${stored:-0}" -ge "$expected" ] && break
  sleep 0.5
done
share=$(curl -s "$url/api/v1/cluster" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(next(m["samples_stored"] for m in c["members"] if m["name"]=="telemetry-2"))')
start=$(date +%s.%N)
"$bin" decommission telemetry-2 --url "$url" 2> "$work/decommission.log"
end=$(date +%s.%N)
tail -1 "$work/decommission.log"
python3 -c "s=$end-$start; print(f'decommissioned telemetry-2 holding {$share:,} samples in {s:.1f} s ({$share/s:,.0f} samples/s)')"
