#!/usr/bin/env bash
# The dashboard in a real browser: a 3-node cluster on loopback (API token on) streams the shared
# DCGM CSV, and a `gen-csv --workloads` host (8 GPUs running pods over the last hour) is
# imported beside it; tests/browser/dashboard.mjs drives headless Chromium (Debian's `chromium`) through
# Playwright (`playwright-core` from npm). Installs both when missing. Screenshots of every view
# are kept in target/browser-screenshots/ (the CI artifact path).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium > /dev/null 2>&1 || {
    apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null
  }
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)
csv=$(cd .. && pwd)/shared/data/dcgm_metrics_20250718_134233.csv
gpus=$(tail -n +2 "$csv" | cut -d, -f5 | sort -u | wc -l)
cargo build -q -p telemetry-node
bin=target/debug/telemetry-node
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
seed="127.0.0.1:$(port)"
token=browser-token
for i in 0 1 2; do
  addr=$seed; [ "$i" -gt 0 ] && addr="127.0.0.1:$(port)"
  stream=(--no-stream)
  # Node 0 replays the file once a second with live timestamps, so charts fill as the test runs.
  [ "$i" -eq 0 ] && stream=(--csv "$csv" --rate 2470 --passes 0)
  "$bin" --node-name "telemetry-$i" --data-dir "$work/n$i" --http-addr 127.0.0.1:0 \
    --cluster-addr "$addr" --seeds "$seed" --cluster-cookie browser --api-token "$token" \
    --partitions 16 "${stream[@]}" > "$work/out$i" 2> "$work/log$i" &
  pids+=($!)
done
until grep -q listening "$work/out0"; do sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out0")
# One host whose GPUs ran pods for the hour up to now (240 scrapes at 15 s).
start=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)
"$bin" gen-csv --hosts 1 --workloads --job-secs 600 --idle-secs 60 --interval-secs 15 \
  --scrapes 240 --start "$start" --seed 5 -o "$work/workloads.csv" 2> /dev/null
gpus=$((gpus + 8))
for _ in $(seq 100); do
  "$bin" import "$work/workloads.csv" --url "$url" --api-token "$token" > /dev/null 2>&1 && break
  sleep 0.3
done
# Ready when all three are live and every GPU is listed.
for _ in $(seq 300); do
  c=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/gpus?limit=10000" || true)
  l=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/cluster" || true)
  if echo "$c" | grep -q "\"total\":$gpus" && echo "$l" | grep -q '"live":\["[^]]*","[^]]*","[^]]*"\]'; then break; fi
  sleep 0.2
done
sleep 3
node tests/browser/dashboard.mjs "$url" "$token" "$gpus" target/browser-screenshots
echo "browser: screenshots in target/browser-screenshots/"
