# Shared helpers for integration tests. Source it first: it makes a scratch directory, exports
# the passphrase, and cleans up on exit. Every assertion failure exits non-zero with a message.
set -euo pipefail
: "${PITR_BIN:?run through make check (tests/run-tests.sh)}"
SNAP="$PITR_BIN/pitr-snap"
T=$(mktemp -d "${TMPDIR:-/tmp}/pitr-test.XXXXXX")
export PITR_PASSPHRASE="correct horse battery staple"
export TZ=UTC
cleanup_hooks=()
on_exit() {
    local rc=$? h
    for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done
    if [[ $rc -eq 0 && -s $T/deferred-failures ]]; then
        echo "FAIL: $(wc -l <"$T/deferred-failures") check(s) failed earlier:" >&2
        sed 's/^/  - /' "$T/deferred-failures" >&2
        rc=1
    fi
    rm -rf "$T"
    exit $rc
}
trap on_exit EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# A failed check that should not hide the checks after it: reported now, fails the test at exit.
defer_fail() { echo "FAIL (continuing): $*" >&2; echo "$*" >>"$T/deferred-failures"; }
note() { echo "--- $*"; }
# wait_until SECONDS COMMAND...: succeeds as soon as COMMAND does (tried every 0.1 s); fails
# if it still fails after SECONDS. For what happens in another process at its own pace.
wait_until() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}
assert_eq() { [[ "$1" == "$2" ]] || fail "${3:-values differ}: expected '$2', got '$1'"; }
# Run a command expecting exit status $1; stderr is kept in $T/stderr.
expect_exit() {
    local want=$1; shift
    local rc=0
    "$@" 2>"$T/stderr" || rc=$?
    cat "$T/stderr" >&2
    [[ $rc -eq $want ]] || fail "expected exit $want from '$*', got $rc"
}
# A fast repository for tests: small scrypt cost (the default costs ~0.2 s per open).
init_repo() { "$SNAP" -r "$1" init --scrypt-n 1024 "${@:2}" >/dev/null; }
# Compare two trees: bytes, and mode/owner/mtime/size/type of every entry.
tree_meta() { (cd "$1" && find . -printf '%p %y %m %U %G %T@ %s %l\n' | sort); }
# (Bytes via tree_manifest below: `diff -r` reports every fifo pair as different.)
assert_same_tree() {
    diff <(tree_manifest "$1") <(tree_manifest "$2") || fail "contents of $1 and $2 differ"
    diff <(tree_meta "$1") <(tree_meta "$2") || fail "metadata of $1 and $2 differ"
}

# ---- helpers added for the integration suite ----

# A missing tool is a failure, never a skip.
require() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || fail "required tool '$c' is not installed"
    done
}
require python3 sha256sum b2sum xargs cmp find
# Path of a C helper from tests/helpers/ (built by `make build-tests`).
helper() {
    local h="$PITR_BUILD/tests/helpers/$1"
    [[ -x $h ]] || fail "test helper $h is missing: run 'make build-tests' first"
    echo "$h"
}
# Print a value from the JSON document on stdin: json_get stats.new_bytes (dotted path; a
# number selects an array element). Fails if the document does not parse or lacks the key.
json_get() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1" || fail "could not read '$1' from JSON output"
}
# Store and print the new snapshot id: store_id REPO store-args...
store_id() {
    local repo=$1 out; shift
    out=$("$SNAP" -r "$repo" store "$@" --json) || fail "store $* into $repo failed"
    json_get id <<<"$out"
}
# Like assert_same_tree, but for the entries below the top directory only (the top directory
# itself is the restore target the user chose).
tree_meta_below() { (cd "$1" && find . -mindepth 1 -printf '%p %y %m %U %G %T@ %s %l\n' | sort); }
assert_same_entries() {
    diff <(tree_manifest "$1") <(tree_manifest "$2") || fail "contents of $1 and $2 differ"
    diff <(tree_meta_below "$1") <(tree_meta_below "$2") || fail "metadata below $1 and $2 differ"
}
# A manifest of a tree: type, path and BLAKE2 digest of every regular file, type, path and
# target of every other entry. Equal manifests mean the same names, types and bytes.
# (Names with white space are not supported.)
tree_manifest() {
    (cd "$1" && {
        find . -mindepth 1 -type f -print0 | xargs -0r b2sum -l 128 | awk '{print "f", $2, $1}'
        find . -mindepth 1 ! -type f -printf '%y %p %l\n'
    } | sort) || fail "could not read the tree $1"
}
# Checksums of every file of a repository, for "unchanged" assertions.
repo_digest() {
    (cd "$1" && find . -type f "${@:2}" -print0 | sort -z | xargs -0r sha256sum)
}
# Random bytes, fast: random_file PATH MiB
random_file() { head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"; }

# flip_byte FILE OFFSET [MASK]: XOR one byte of FILE in place (damage for corruption tests).
flip_byte() {
    python3 - "$1" "$2" "${3:-64}" <<'PY' || fail "could not flip byte $2 of $1"
import sys
path, off, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ mask]))
print(f"flipped byte {off} of {path}")
PY
}
