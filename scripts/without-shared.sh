#!/usr/bin/env bash
# Runs a command as a fresh clone without ../shared would: an empty directory is bound over
# ../shared in a private mount namespace, so the reference data is gone for this command only.
# Usage: scripts/without-shared.sh cargo test --workspace
set -euo pipefail
shared="$(cd "$(dirname "$0")/../.." && pwd)/shared"
if [ ! -d "$shared" ]; then
  exec "$@"
fi
empty=$(mktemp -d)
exec unshare --mount --propagation private \
  bash -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' _ "$empty" "$shared" "$@"
