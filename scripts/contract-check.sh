#!/usr/bin/env bash
# The REST contract against a live node: schemathesis (PyPI, in target/ci-venv) reads the node's
# /openapi.json and sends generated requests to every operation, once with the API token and
# once without. Every check runs: no 5xx, every status code documented, every body valid against
# its schema, content types and headers as documented, invalid input refused with 4xx, and
# schema-valid input accepted (the document states every rule the server enforces: ranges,
# patterns, the cursor's form, the CSV body's header; the one cross-parameter rule, start_time
# not after end_time, is named in scripts/schemathesis.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/ci-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q schemathesis
cargo build -q -p telemetry-node
work=$(mktemp -d)
target/debug/telemetry-node --data-dir "$work/data" --http-addr 127.0.0.1:0 \
  --cluster-addr 127.0.0.1:0 --rate 0 --passes 1 --api-token contract-token \
  > "$work/out" 2> "$work/log" &
node=$!
trap 'kill $node 2>/dev/null || true; rm -rf "$work"' EXIT
until grep -q listening "$work/out"; do sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out")
sleep 2
checks=(--checks all --max-examples 100 --suppress-health-check all --seed 1)
cd "$work"
echo "-- with the token"
"$OLDPWD/$venv/bin/schemathesis" --config-file "$OLDPWD/scripts/schemathesis.toml" run "$url/openapi.json" -H "Authorization: Bearer contract-token" \
  "${checks[@]}" 2>&1 | tail -25
echo "-- without the token"
"$OLDPWD/$venv/bin/schemathesis" --config-file "$OLDPWD/scripts/schemathesis.toml" run "$url/openapi.json" "${checks[@]}" 2>&1 | tail -15
