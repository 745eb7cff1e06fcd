#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 30) with libFuzzer
# through cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags it
# passes). Installs cargo-fuzz if missing. A crash fails the run and leaves the input under
# fuzz/artifacts/<target>/; turn it into a regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-30}
command -v cargo-fuzz > /dev/null || cargo install -q cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
# Seeds: real DCGM rows for the CSV target; the others start from nothing.
mkdir -p corpus/csv_rows
head -40 ../node/sample/dcgm_sample.csv > corpus/csv_rows/dcgm_sample_head.csv
cargo fuzz build -O
for target in csv_rows cluster_envelope broker_record chunk_decode; do
  log=$(mktemp)
  if ! cargo fuzz run -O "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target/)"
    exit 1
  fi
  echo "fuzz: $target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log")"
  rm -f "$log"
done
