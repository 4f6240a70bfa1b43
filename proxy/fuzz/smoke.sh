#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets and runs each for a short, bounded
# time from the seed corpus. Exits non-zero if any target crashes, leaks, times out or
# fails to build. Needs only stable Rust and a C++ compiler (libfuzzer-sys builds
# libFuzzer): cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 unlocks on stable.
#
#   proxy/fuzz/smoke.sh                      # every target, 20 s each
#   FUZZ_SECONDS=300 proxy/fuzz/smoke.sh policy_parser
#   FUZZ_SANITIZER=none proxy/fuzz/smoke.sh  # no AddressSanitizer (faster, finds less)
#   FUZZ_PROFILE=dev proxy/fuzz/smoke.sh     # unoptimised: builds in a third of the
#                                            # time, runs 15-60x fewer inputs (CI's choice)
#
# New inputs go to target/smoke-corpus/<target>, never into the seed corpus in git.
# Crashes are written to artifacts/<target>/; see docs/fuzzing.md for what to do next.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_EACH=${FUZZ_SECONDS:-20}
SANITIZER=${FUZZ_SANITIZER:-address}
PROFILE=${FUZZ_PROFILE:-release}
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=(frame_decoder policy_parser config_parsers tls_edge_parsers)
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

FUZZ_ARGS=(--sanitizer "$SANITIZER" --target-dir target)
case "$PROFILE" in
    release) ;;
    dev) FUZZ_ARGS+=(--dev) ;;
    *) echo "smoke: FUZZ_PROFILE must be release or dev, not '$PROFILE'" >&2; exit 2 ;;
esac
started=$(date +%s)

echo "smoke: building ${TARGETS[*]} (sanitizer: $SANITIZER, profile: $PROFILE)"
if [ "$#" -eq 0 ]; then
    cargo fuzz build "${FUZZ_ARGS[@]}"
else
    for t in "${TARGETS[@]}"; do
        cargo fuzz build "${FUZZ_ARGS[@]}" "$t"
    done
fi
built=$(date +%s)

mkdir -p target/smoke-logs
failed=()
summary=()
for t in "${TARGETS[@]}"; do
    scratch=target/smoke-corpus/$t
    log=target/smoke-logs/$t.log
    mkdir -p "$scratch" "corpus/$t"
    echo "smoke: running $t for ${SECONDS_EACH}s"
    status=0
    cargo fuzz run "${FUZZ_ARGS[@]}" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
    runs=${runs:-0}
    # libFuzzer ends with "Done N runs in S second(s)".
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1 || true)
    [ "${secs:-0}" -gt 0 ] || secs=$SECONDS_EACH
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | sed 's/cov: //' || true)
    line=$(printf '%-16s %10s runs  %8s runs/s  cov %s' "$t" "$runs" "$((runs / secs))" "${cov:-?}")
    if [ "$status" -ne 0 ]; then
        line="$line  FAILED (exit $status, log $PWD/$log)"
        failed+=("$t")
        tail -n 40 "$log" >&2
    fi
    echo "smoke: $line"
    summary+=("$line")
done

echo
echo "fuzz smoke summary (build $((built - started))s, total $(($(date +%s) - started))s):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "smoke: crashes in: ${failed[*]} (inputs in $PWD/artifacts/)" >&2
    exit 1
fi
echo "smoke: ${#TARGETS[@]} passed, 0 failed"
