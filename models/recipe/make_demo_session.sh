#!/usr/bin/env bash
# Regenerates sessions/demo.json: `edgescope eval` over the whole zoo on the test split, with the
# calibration subset for percentile thresholds, one intra-op thread (stable latencies on a small machine).
# Takes several minutes; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/edgescope
cargo build --release  # quick when up to date; makes sure the binary matches the source
rm -f sessions/demo.json
mkdir -p sessions
nice -n 15 "$BIN" eval --dataset assets/fashion-mnist/test --calibration assets/fashion-mnist/calib \
    --threads 1 --variant models/resnet/*.toml models/mobilenet/*.toml --out sessions/demo.json
