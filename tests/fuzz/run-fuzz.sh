#!/usr/bin/env bash
# Runs each libFuzzer target named on the command line for FUZZ_SECONDS, starting from its
# committed seed corpus (tests/fuzz/<target>/corpus) and its reproducers of past findings
# (tests/fuzz/<target>/crashes-found, run first: a finding that is not fixed fails at once).
# New inputs go to FUZZ_BUILD/fuzz-work/<target>/corpus, never into the source tree; a crash,
# leak, timeout, out-of-memory or broken promise leaves its input in
# FUZZ_BUILD/fuzz-work/<target>/ and fails the run (after every target has had its turn).
set -u
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
# An input slower than this is a hang; a process larger than this, a leak of memory.
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-20}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
src=$(cd "$(dirname "$0")" && pwd)
[[ $# -gt 0 ]] || { echo "usage: $0 TARGET..." >&2; exit 64; }
failed=()
for t in "$@"; do
    bin="$FUZZ_BUILD/tests/fuzz/$t"
    work="$FUZZ_BUILD/fuzz-work/$t"
    if [[ ! -x $bin ]]; then
        echo "fuzz $t: $bin is missing (make fuzz-build)" >&2
        failed+=("$t")
        continue
    fi
    mkdir -p "$work/corpus"
    rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work/log"
    dirs=("$work/corpus")
    [[ -d $src/$t/corpus ]] || { echo "fuzz $t: no seed corpus in $src/$t/corpus" >&2; failed+=("$t"); continue; }
    dirs+=("$src/$t/corpus")
    [[ -d $src/$t/crashes-found ]] && dirs+=("$src/$t/crashes-found")
    # The target's scratch directory, removed here since a crash skips its removal at exit; in
    # shared memory when there is some (the key targets open an LMDB index per input, and its
    # syncs on a disk slow them 40-fold).
    shm=/dev/shm
    [[ -d $shm && -w $shm ]] || shm=$work
    tmp=$(mktemp -d "$shm/pitr-fuzz-$t.XXXXXX")
    t0=$SECONDS rc=0
    # stderr of the target (the library's messages on damaged input) is closed: libFuzzer and
    # the sanitizers report on a descriptor of their own.
    TMPDIR=$tmp "$bin" -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" \
        -rss_limit_mb="$FUZZ_RSS_MB" -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$work/" "${dirs[@]}" \
        >"$work/log" 2>&1 || rc=$?
    rm -rf "$tmp"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
    if [[ $rc -eq 0 ]]; then
        printf 'fuzz %-16s ok (%ds, %s runs, %s)\n' "$t" $((SECONDS - t0)) "${runs:-?}" "${cov:-cov: ?}"
    else
        printf 'fuzz %-16s FAIL (exit %d after %ds)\n' "$t" "$rc" $((SECONDS - t0))
        grep -E '^==[0-9]+==|SUMMARY|broken promise|Test unit written|^    #[0-9] ' "$work/log" |
            head -40 | sed 's/^/    | /'
        echo "    | full log: $work/log"
        failed+=("$t")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: $# targets ok"
