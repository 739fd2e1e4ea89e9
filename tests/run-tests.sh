#!/usr/bin/env bash
# Runs every unit test binary and every integration script; prints one line per test and a
# final "N passed, N failed" line. A test that cannot run (missing tool, no /dev/fuse) fails.
set -u
BUILD=${BUILD:-build}
export PITR_BIN="$PWD/$BUILD/bin" PITR_BUILD="$PWD/$BUILD" PITR_TEST_DATA="$PWD/tests/data"
export PITR_SRC="$PWD"
passed=0 failed=0 failures=()
logdir="$BUILD/test-logs"
mkdir -p "$logdir"
run() {
    local name=$1; shift
    local log="$logdir/$(echo "$name" | tr '/' '_').log"
    local t0=$SECONDS rc=0 limit=${TEST_TIMEOUT:-600}
    # A test that hangs fails after $limit seconds instead of stopping the whole run; SIGTERM
    # first, so an integration script still runs its cleanup (servers, mounts).
    timeout --kill-after=30 "$limit" "$@" >"$log" 2>&1 || rc=$?
    if [[ $rc -eq 0 ]]; then
        printf '%-60s ok (%ds)\n' "$name" $((SECONDS - t0)); passed=$((passed + 1))
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && echo "TIMEOUT: stopped after $limit s (TEST_TIMEOUT)" >>"$log"
        printf '%-60s FAIL (%ds)\n' "$name" $((SECONDS - t0)); failed=$((failed + 1))
        failures+=("$name"); tail -n 40 "$log" | sed 's/^/    | /'
    fi
}
only=${TESTS:-}
for t in $(find "$BUILD/tests/unit" -type f -executable -name 'test-*' ! -name '*.*' 2>/dev/null | sort); do
    [[ -n $only && $t != *$only* ]] && continue
    run "unit/${t#$BUILD/tests/unit/}" "$t"
done
for t in tests/integration/test-*.sh; do
    [[ -e $t ]] || continue
    [[ -n $only && $t != *$only* ]] && continue
    run "integration/$(basename "$t" .sh)" bash "$t"
done
echo
[[ $failed -gt 0 ]] && printf 'failed: %s\n' "${failures[*]}"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
