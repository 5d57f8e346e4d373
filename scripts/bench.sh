#!/usr/bin/env bash
# Runs the loopback benchmarks and prints a markdown table of ratios (see README, Performance).
# Sizes: RTR_BENCH_* environment variables (benches/load.rs, `Config`); Redis at REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --quiet --bench load --features file,redis "$@"
