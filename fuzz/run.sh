#!/usr/bin/env bash
# Runs one fuzz target for a bounded time on stable Rust: `fuzz/run.sh TARGET SECONDS`.
# cargo-fuzz's default AddressSanitizer needs nightly (`-Zsanitizer`); `-s none` keeps only the
# SanitizerCoverage instrumentation (stable `-C passes=sancov-module` flags), which is all a
# panic-finding fuzzer of safe Rust needs. The committed corpus and regression inputs are read,
# never written: new inputs go to a scratch directory. Exit status non-zero on a crash; the
# crashing input is left in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?usage: fuzz/run.sh TARGET SECONDS}"
seconds="${2:?usage: fuzz/run.sh TARGET SECONDS}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
dirs=("$scratch" "corpus/$target")
if [ -d "regressions/$target" ]; then
    dirs+=("regressions/$target")
fi
cargo fuzz run --sanitizer none "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
