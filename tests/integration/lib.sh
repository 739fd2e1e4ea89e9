# Shared helpers for integration tests. Source it first: it makes a scratch directory, exports
# the passphrase, and cleans up on exit. Every assertion failure exits non-zero with a message.
set -euo pipefail
: "${PITR_BIN:?run through make check (tests/run-tests.sh)}"
SNAP="$PITR_BIN/pitr-snap"
T=$(mktemp -d "${TMPDIR:-/tmp}/pitr-test.XXXXXX")
export PITR_PASSPHRASE="correct horse battery staple"
cleanup_hooks=()
on_exit() { local h; for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done; rm -rf "$T"; }
trap on_exit EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "--- $*"; }
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
assert_same_tree() {
    diff -r --no-dereference "$1" "$2" || fail "contents of $1 and $2 differ"
    diff <(tree_meta "$1") <(tree_meta "$2") || fail "metadata of $1 and $2 differ"
}
