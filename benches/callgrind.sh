#!/usr/bin/env bash
# Instructions per request for each case of benches/callgrind.rs, counted by callgrind.
#
#   benches/callgrind.sh              # build once (release), run every case, print the table
#   N=500 CASES="warm new_token" REPEAT=1 benches/callgrind.sh
#
# N          measured requests per case (default 400); WARMUP=20 unmeasured ones come first
# CASES      subset of: direct warm new_token not_found unauthenticated limited routes_1000 (warm behind 1 000 routes)
# REPEAT     1: run every case a second time and check the count is identical
# BIN        use this benchmark binary instead of building
# OUT        where callgrind files and the token file go (default target/callgrind)
# ANNOTATE   1: also print the callgrind_annotate breakdown by phase for every case
#
# Only the measured section is collected: `--toggle-collect` on `callgrind_measured` (client, gateway
# and upstream on the one runtime thread) and on the audit writer's per-record encoding (its own
# thread). Kernel time is not counted by callgrind at all. The same binary with the same token file
# gives the same counts; a new token file changes the `new_token` count slightly (every ECDSA
# signature costs a slightly different number of instructions to verify).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-400}
CASES=${CASES:-"direct warm new_token not_found unauthenticated limited routes_1000"}
OUT=${OUT:-target/callgrind}
mkdir -p "$OUT"

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

if [[ -z "${BIN:-}" ]]; then
    echo "building benches/callgrind.rs (release profile)..." >&2
    BIN=$(cargo build --release --bench callgrind --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "callgrind":
        print(m["executable"])' | tail -1)
    [[ -x "$BIN" ]] || { echo "build failed: cargo build --release --bench callgrind" >&2; exit 1; }
fi

TOKENS="$OUT/tokens.txt"
need=$((N + 21))
have=$( [[ -f "$TOKENS" ]] && wc -l <"$TOKENS" || echo 0 )
# Tokens live 2 h; re-mint when the file is older than 90 min or too short.
if (( have < need )) || [[ -n "$(find "$TOKENS" -mmin +90 2>/dev/null)" ]]; then
    echo "minting $need ES256 tokens into $TOKENS..." >&2
    "$BIN" mint "$TOKENS" "$need"
fi

run() { # case out-file
    valgrind --tool=callgrind --toggle-collect='*callgrind_measured*' --toggle-collect='airgate::audit::record::encode' \
        --callgrind-out-file="$2" "$BIN" "$1" "$N" "$TOKENS" >/dev/null 2>"$2.log" \
        || { echo "case $1 failed, see $2.log" >&2; exit 1; }
    awk '/^totals:/ {print $2}' "$2"
}

declare -A count
printf '| case | instructions/request | minus direct |\n|---|---:|---:|\n'
for c in $CASES; do
    total=$(run "$c" "$OUT/$c.out")
    if [[ "${REPEAT:-}" == 1 ]]; then
        again=$(run "$c" "$OUT/$c.again.out")
        [[ "$again" == "$total" ]] || echo "NOT REPEATABLE: $c gave $total then $again" >&2
    fi
    # The audit encoding of the warm-up requests is collected too: the script divides it by the
    # records encoded, the rest by N.
    per=$(python3 benches/callgrind_phases.py --total "$OUT/$c.out" "$N")
    count[$c]=$per
    if [[ -n "${count[direct]:-}" && "$c" != direct ]]; then
        printf '| %s | %d | %d |\n' "$c" "$per" $(( per - count[direct] ))
    else
        printf '| %s | %d | |\n' "$c" "$per"
    fi
done

if [[ "${ANNOTATE:-}" == 1 ]]; then
    for c in $CASES; do
        echo; echo "## $c (inclusive instructions per request by phase)"
        python3 benches/callgrind_phases.py "$OUT/$c.out" "$N"
    done
fi
