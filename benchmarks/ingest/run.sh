#!/usr/bin/env bash
# Time and peak memory of ingesting the 60,000 MNIST training images into a fresh SQLite workspace.
#   bash benchmarks/ingest/run.sh [workspace]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
ws=${1:-$(mktemp -d)/ws}
mnist="$root/../shared/datasets/mnist"
export CURATOR_WORKSPACE="$ws" CURATOR_PROGRESS=0
cat /proc/loadavg
/usr/bin/time -v "$root/.venv/bin/curator" ingest "$mnist/train-images-idx3-ubyte.gz" \
  --labels "$mnist/train-labels-idx1-ubyte.gz" --dataset train --split train 2>&1 \
  | grep -E "added|Elapsed|Maximum resident"
cat /proc/loadavg
