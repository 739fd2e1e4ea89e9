#!/usr/bin/env bash
# The index is a cache of the packs. It is rebuilt when missing, and a pack that is in the
# backend but not in the index (a crash between publishing a pack and indexing it) is
# indexed when a read misses one of its chunks.
source "$(dirname "$0")/lib.sh"
REPO="$T/repo"
init_repo "$REPO"
head -c 3M /dev/urandom >"$T/a"
head -c 3M /dev/urandom >"$T/b"
"$SNAP" -q -r "$REPO" store --stdin --name a <"$T/a" >/dev/null || fail "store a failed"

note "an index that does not know the newest pack"
cp -a "$REPO/index" "$T/index-before-b"
"$SNAP" -q -r "$REPO" store --stdin --name b <"$T/b" >/dev/null || fail "store b failed"
rm -rf "$REPO/index" && cp -a "$T/index-before-b" "$REPO/index"
"$SNAP" -r "$REPO" cat b >"$T/b.out" 2>"$T/err" || { cat "$T/err"; fail "cat b did not find the unindexed pack"; }
cmp "$T/b" "$T/b.out" || fail "b read back wrong"
grep -q "damaged\|missing" "$T/err" && fail "a recoverable miss was reported as an error"
cmp "$T/a" <("$SNAP" -r "$REPO" cat a) || fail "a read back wrong"

note "a missing index is rebuilt by any command"
rm -rf "$REPO/index"
"$SNAP" -r "$REPO" list >/dev/null 2>"$T/err" || { cat "$T/err"; fail "list after deleting the index failed"; }
grep -q "rebuilt it from 2 packs" "$T/err" || { cat "$T/err"; fail "no rebuild message"; }
cmp "$T/b" <("$SNAP" -r "$REPO" cat b) || fail "b read back wrong after the rebuild"

note "a chunk that no pack holds is still an error"
rm -rf "$REPO/index" && cp -a "$T/index-before-b" "$REPO/index"
rm -f "$REPO"/packs/*/*.pack
expect_exit 1 "$SNAP" -r "$REPO" cat b
grep -q "missing from the index" "$T/stderr" || fail "no message naming the missing chunk"
echo "index sync ok"
