#!/usr/bin/env bash
# Runs the loopback benchmarks and prints a markdown table of ratios (see README, Performance,
# and benches/README.md).
# Sizes: RTR_BENCH_* environment variables (benches/load.rs, `Config`); sections:
# RTR_BENCH_SECTIONS (default 12345; the fleet, 6, runs only when named: RTR_BENCH_SECTIONS=6).
# Redis at REDIS_URL, PostgreSQL at DATABASE_URL (section 6); rows whose server is missing are
# skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --quiet --bench load --features file,redis,dpop,postgres "$@"
