#!/usr/bin/env bash
# A chaos run against a Colony cluster in Docker containers: build the image
# from our own binary, start the compose cluster, run clients and faults for
# DURATION seconds (seeded), heal, check the history. Exit status 1 when the
# checker finds a violation.
#
#   scripts/chaos.sh                      # 3 nodes, 30 minutes, release build
#   DURATION=90 PROFILE=debug scripts/chaos.sh     # what CI runs
#   NODES=5 SEED=7 scripts/chaos.sh
#
# Settings (environment): NODES [3] (3 or 5), DURATION [1800] seconds,
# SEED [from the clock], FAULT_EVERY [10] seconds, PROFILE [release],
# OUT [chaos-report.json]. Only our own containers are targeted, on their
# own network; clients reach them on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
DURATION=${DURATION:-1800}
FAULT_EVERY=${FAULT_EVERY:-10}
PROFILE=${PROFILE:-release}
OUT=${OUT:-chaos-report.json}
SEED=${SEED:-$(date +%s%N)}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

if ! docker info >/dev/null 2>&1; then
    echo "chaos.sh: Docker is not available here" >&2
    exit 2
fi
if [ "$PROFILE" = release ]; then
    cargo build --release -q -p colony-server -p colony-testkit --bin colony --bin colony-chaos
else
    cargo build -q -p colony-server -p colony-testkit --bin colony --bin colony-chaos
fi
deploy/docker/build-image.sh "$TARGET_DIR/$PROFILE/colony"
"$TARGET_DIR/$PROFILE/colony-chaos" --compose "deploy/docker/compose-$NODES.yml" --nodes "$NODES" \
    --project "colonychaos$NODES" --duration "$DURATION" --fault-every "$FAULT_EVERY" \
    --seed "$SEED" --out "$OUT"
