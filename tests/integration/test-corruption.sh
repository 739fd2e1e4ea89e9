#!/usr/bin/env bash
# Damaged packs: a flipped byte makes reads of the affected data fail with exit 4 and a message
# naming the chunk and the pack, never wrong bytes; everything in other packs still reads. A
# truncated pack is found when the index is rebuilt; the rest of the repository stays usable.
. "$(dirname "$0")/lib.sh"
REPO=$T/repo
init_repo "$REPO"
packs() { (cd "$REPO" && find packs -type f -name '*.pack' | sort); }
new_packs() { comm -13 "$1" <(packs); } # packs not in the listing file $1

# Prints 0 if file $1 is a strict prefix of file $2 (possibly empty), else 1.
is_strict_prefix() {
    python3 -c '
import sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
print(0 if len(a) < len(b) and b.startswith(a) else 1)' "$1" "$2"
}

note "stream A, stream B, trees"
random_file "$T"/A 8
random_file "$T"/B 4
packs >"$T"/p0
ID_A=$(store_id "$REPO" --stdin --name A <"$T"/A)
new_packs "$T"/p0 >"$T"/packs-A
packs >"$T"/p1
ID_B=$(store_id "$REPO" --stdin --name B <"$T"/B)
new_packs "$T"/p1 >"$T"/packs-B
cat "$T"/packs-A "$T"/packs-B
[[ -s $T/packs-A && -s $T/packs-B ]] || fail "storing A and B did not add packs"
[[ -z $(comm -12 "$T"/packs-A "$T"/packs-B) ]] || fail "A and B share a pack"

# Tree 1: one file holds A's bytes (its chunks dedupe into A's pack), the others are new.
mkdir -p "$T"/t1/sub "$T"/t2
cp "$T"/A "$T"/t1/sub/copy-of-a
random_file "$T"/t1/one 1
random_file "$T"/t1/two 1
echo small >"$T"/t1/three
# Tree 2: nothing of A.
random_file "$T"/t2/x 2
cp "$T"/B "$T"/t2/copy-of-b
packs >"$T"/p2
out=$("$SNAP" -r "$REPO" store "$T"/t1 --name t1 --json) || fail "store t1 failed"
ID_T1=$(json_get id <<<"$out")
new=$(json_get stats.new_bytes <<<"$out")
[[ $new -lt $((3 * 1024 * 1024)) ]] || fail "t1's copy of A did not dedupe ($new new bytes)"
ID_T2=$(store_id "$REPO" "$T"/t2 --name t2)
new_packs "$T"/p2 >"$T"/packs-T
grep -qFf "$T"/packs-A "$T"/packs-T && fail "sanity: a tree store wrote into A's pack"

note "flip one byte in the middle of A's pack"
PACK_A=$(head -n 1 "$T"/packs-A)
flip_byte "$REPO/$PACK_A" $(($(stat -c %s "$REPO/$PACK_A") / 2)) 64
pack_base=$(basename "$PACK_A" .pack)

rc=0
"$SNAP" -r "$REPO" cat "$ID_A" >"$T"/A.out 2>"$T"/stderr || rc=$?
cat "$T"/stderr
assert_eq "$rc" 4 "exit status of cat of a damaged stream"
grep -q pack "$T"/stderr || fail "the error does not mention the pack"
grep -q "$pack_base" "$T"/stderr || fail "the error does not name the damaged pack $pack_base"
grep -Eq '[0-9a-f]{64}' "$T"/stderr || fail "the error does not name the chunk (64 hex digits)"
grep -qi damaged "$T"/stderr || fail "the error does not say the data is damaged"
cmp -s "$T"/A "$T"/A.out && fail "cat of a damaged stream returned the original bytes"
[[ $(is_strict_prefix "$T"/A.out "$T"/A) == 0 ]] ||
    fail "cat of a damaged stream wrote bytes that are not the stream's (got $(stat -c %s "$T"/A.out) bytes)"
echo "cat A wrote $(stat -c %s "$T"/A.out) of $(stat -c %s "$T"/A) bytes before failing"

"$SNAP" -r "$REPO" cat "$ID_B" >"$T"/B.out || fail "cat B failed although B's packs are intact"
cmp "$T"/B "$T"/B.out || fail "B read back differs"

note "restore of a tree with one file in the damaged pack"
rc=0
"$SNAP" -r "$REPO" restore "$ID_T1" "$T"/t1.out 2>"$T"/stderr || rc=$?
cat "$T"/stderr
assert_eq "$rc" 4 "exit status of restore of a tree with a damaged file"
grep -q "$pack_base" "$T"/stderr || fail "the restore error does not name the damaged pack"
grep -Eq '[0-9a-f]{64}' "$T"/stderr || fail "the restore error does not name the chunk"
if [[ -e $T/t1.out/sub/copy-of-a ]]; then
    [[ $(is_strict_prefix "$T"/t1.out/sub/copy-of-a "$T"/A) == 0 ]] ||
        fail "restore wrote bytes that are not the file's into copy-of-a"
fi
"$SNAP" -r "$REPO" restore "$ID_T2" "$T"/t2.out || fail "restore of a tree without damaged data failed"
assert_same_entries "$T"/t2 "$T"/t2.out
# Twice, so a reader cache cannot have made the first answer right by luck.
rc=0
"$SNAP" -r "$REPO" cat "$ID_A" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 4 "exit status of a second cat of the damaged stream"

note "a truncated pack and a lost index"
random_file "$T"/C 3
packs >"$T"/p3
ID_C=$(store_id "$REPO" --stdin --name C <"$T"/C)
PACK_C=$(new_packs "$T"/p3 | head -n 1)
[[ -n $PACK_C ]] || fail "storing C did not add a pack"
truncate -s -100 "$REPO/$PACK_C"
c_base=$(basename "$PACK_C" .pack)
packs_total=$(packs | wc -l)
cp -a "$REPO" "$T"/repo-copy

# Reopening for reading rebuilds the index: a warning names the truncated pack, the command
# succeeds, and the data of intact packs reads.
rm -rf "$REPO"/index
rc=0
"$SNAP" -r "$REPO" list >"$T"/list.out 2>"$T"/stderr || rc=$?
cat "$T"/list.out "$T"/stderr
if [[ $rc -ne 0 ]]; then
    defer_fail "list after deleting index/ exited $rc"
fi
grep -q "$c_base" "$T"/stderr && grep -qi damaged "$T"/stderr ||
    defer_fail "list after deleting index/ did not warn that pack $c_base is damaged (the index was not rebuilt)"
grep -q "$ID_B" "$T"/list.out || defer_fail "list after deleting index/ does not show B"
"$SNAP" -r "$REPO" cat "$ID_B" >"$T"/B.out2 2>"$T"/stderr || { cat "$T"/stderr; defer_fail "cat B after the index was deleted and the repository reopened by list failed"; }
cmp -s "$T"/B "$T"/B.out2 || defer_fail "B read after the index rebuild differs"
"$SNAP" -r "$REPO" restore "$ID_T2" "$T"/t2.out2 2>"$T"/stderr || { cat "$T"/stderr; defer_fail "restore of t2 after the index rebuild failed"; }
n=$("$SNAP" -r "$REPO" info --json | json_get packs) || true
[[ $n == $((packs_total - 1)) ]] ||
    defer_fail "after the rebuild the index holds $n packs, expected $((packs_total - 1)) (all but the truncated one)"
rc=0
"$SNAP" -r "$REPO" cat "$ID_C" >"$T"/C.out 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || defer_fail "cat of C (in a truncated pack) succeeded"
[[ $(is_strict_prefix "$T"/C.out "$T"/C) == 0 ]] || defer_fail "cat of C wrote bytes that are not C's"

# The same when the first command after the loss is a store: it rebuilds, warns, and a damaged
# old pack must not stop new data from being stored.
rm -rf "$T"/repo-copy/index
rc=0
echo "new data" | "$SNAP" -r "$T"/repo-copy store --stdin --name D >"$T"/out 2>"$T"/stderr || rc=$?
cat "$T"/out "$T"/stderr
grep -q "$c_base" "$T"/stderr || defer_fail "store after deleting index/ did not warn about pack $c_base"
[[ $rc -eq 0 ]] || defer_fail "store after deleting index/ exited $rc because of the old truncated pack"
"$SNAP" -r "$T"/repo-copy cat "$ID_B" >"$T"/B.out3 2>"$T"/stderr || { cat "$T"/stderr; defer_fail "cat B in the copy after the rebuild by store failed"; }
cmp -s "$T"/B "$T"/B.out3 || defer_fail "B read in the copy after the rebuild by store differs"
echo "corruption checks done"
