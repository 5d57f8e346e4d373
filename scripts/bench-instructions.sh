#!/usr/bin/env bash
# End-to-end cost of the middleware in CPU instructions, counted by callgrind (repeatable,
# unlike wall-clock ratios on a shared machine). For each client — bare (no token sent), plain
# (the caller sends the header), plain behind a do-nothing middleware (with and without a replay
# copy), and ours — it counts
# the whole process (client + loopback server) for two request counts; the difference divided
# by the extra requests is the cost per request.
# Prints a markdown table. Needs valgrind (Debian package `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
low="${RTR_BENCH_LOW:-200}"
high="${RTR_BENCH_HIGH:-1200}"
cargo bench --no-run --quiet --bench load --features file,redis,dpop,postgres 2>/dev/null
target_dir="$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')"
binary="$(ls -t "$target_dir"/release/deps/load-* | grep -v '\.d$' | head -n 1)"
count() {
    local out
    out="$(mktemp)"
    RTR_BENCH_INSTRUCTIONS="$1" RTR_BENCH_REQUESTS="$2" valgrind --tool=callgrind \
        --callgrind-out-file="$out" "$binary" >/dev/null 2>&1
    grep '^summary:' "$out" | awk '{print $2}'
    rm -f "$out"
}
declare -A per_request
for variant in bare plain noop cloning ours; do
    a="$(count "$variant" "$low")"
    b="$(count "$variant" "$high")"
    per_request[$variant]=$(( (b - a) / (high - low) ))
done
row() { # label, variant
    awk -v label="$1" -v n="${per_request[$2]}" -v bare="${per_request[bare]}" \
        -v plain="${per_request[plain]}" \
        'BEGIN { printf "| %s | %d | %.3f | %.3f |\n", label, n, bare / n, plain / n }'
}
echo "| client (same loopback server, 1 request in flight) | instructions per request | bare ÷ client | plain ÷ client |"
echo "|---|---|---|---|"
row "bare: plain reqwest-middleware client, no \`Authorization\`" bare
row "plain: the same client, the caller sets the same \`Authorization\` header" plain
row "plain + a do-nothing middleware (the floor)" noop
row "plain + a do-nothing middleware keeping a replay copy (\`Request::try_clone\`)" cloning
row "+ reqwest-token-refresh (valid token), no header set by the caller" ours
