#!/usr/bin/env bash
# Writers share a repository: two stores at once (partly the same data) both succeed and both
# snapshots restore exactly; readers (list, cat, restore) are not blocked by a running store.
. "$(dirname "$0")/lib.sh"
require mkfifo timeout
PACK_CHECK=$(helper pack-check)
REPO=$T/repo
init_repo "$REPO"

# X and Y share one 12 MB file and differ in the rest.
mkdir -p "$T"/X/sub "$T"/Y/other
random_file "$T"/shared 12
cp "$T"/shared "$T"/X/sub/shared
cp "$T"/shared "$T"/Y/shared-too
random_file "$T"/X/x1 10
random_file "$T"/X/sub/x2 6
seq 1 300000 >"$T"/X/text
random_file "$T"/Y/other/y1 14
seq 5 300000 >"$T"/Y/text

note "two stores started together on a fresh repository (no index yet)"
list_loop() { # list over and over while the stores run; any failure is recorded
    while [[ ! -e $T/stop-listing ]]; do
        timeout 20 "$SNAP" -r "$REPO" list >/dev/null 2>>"$T"/list-loop.err || echo "list exited $?" >>"$T"/list-loop.fail
        sleep 0.05
    done
}
list_loop &
lister=$!
"$SNAP" -r "$REPO" store "$T"/X --name X --json >"$T"/X.json 2>"$T"/X.err &
px=$!
"$SNAP" -r "$REPO" store "$T"/Y --name Y --json >"$T"/Y.json 2>"$T"/Y.err &
py=$!
rcx=0 rcy=0
wait "$px" || rcx=$?
wait "$py" || rcy=$?
touch "$T"/stop-listing
wait "$lister"
cat "$T"/X.err "$T"/Y.err
[[ $rcx -eq 0 ]] || fail "store X exited $rcx while store Y ran"
[[ $rcy -eq 0 ]] || fail "store Y exited $rcy while store X ran"
if [[ -s $T/list-loop.fail ]]; then
    cat "$T"/list-loop.err
    sort "$T"/list-loop.fail | uniq -c
    defer_fail "list failed $(wc -l <"$T"/list-loop.fail) time(s) while the first two stores of the repository ran"
fi
IDX=$(json_get id <"$T"/X.json)
IDY=$(json_get id <"$T"/Y.json)
"$SNAP" -r "$REPO" restore "$IDX" "$T"/rX || fail "restore X failed"
"$SNAP" -r "$REPO" restore "$IDY" "$T"/rY || fail "restore Y failed"
assert_same_entries "$T"/X "$T"/rX
assert_same_entries "$T"/Y "$T"/rY

note "a store held open mid-stream while another store and readers run"
random_file "$T"/u1 6
random_file "$T"/u2 6
mkfifo "$T"/feed
(
    cat "$T"/shared "$T"/u1
    touch "$T"/half-written
    while [[ ! -e $T/go ]]; do sleep 0.05; done
    cat "$T"/u2
) >"$T"/feed &
feeder=$!
"$SNAP" -r "$REPO" store --stdin --name S1 --json <"$T"/feed >"$T"/S1.json 2>"$T"/S1.err &
ps1=$!
cleanup_hooks+=("touch '$T/go'; kill $feeder $ps1 2>/dev/null")
for ((k = 0; k < 400; k++)); do
    [[ -e $T/half-written ]] && break
    kill -0 "$ps1" 2>/dev/null || { cat "$T"/S1.err; fail "store S1 ended before its input was complete"; }
    sleep 0.05
done
[[ -e $T/half-written ]] || fail "store S1 did not read its first 18 MB within 20 s"
kill -0 "$ps1" 2>/dev/null || fail "store S1 is not running any more"

# While S1 is in the middle of its input: a whole other store, with data S1 also has.
mkdir -p "$T"/Z
cp "$T"/shared "$T"/Z/shared
cp "$T"/u1 "$T"/Z/u1-copy
random_file "$T"/Z/z 3
out=$(timeout 60 "$SNAP" -r "$REPO" store "$T"/Z --name Z --json) ||
    fail "store Z failed (or hung) while store S1 was running"
IDZ=$(json_get id <<<"$out")
# Readers are not blocked either.
timeout 20 "$SNAP" -r "$REPO" list >"$T"/list.out || fail "list failed or hung while store S1 was running"
grep -q " Z$" "$T"/list.out || fail "list does not show Z"
grep -q " S1$" "$T"/list.out && fail "list shows S1 before it completed"
timeout 20 "$SNAP" -r "$REPO" info --json >/dev/null || fail "info failed or hung while store S1 was running"
timeout 60 "$SNAP" -r "$REPO" restore "$IDZ" "$T"/rZ || fail "restore of Z failed or hung while store S1 was running"
assert_same_entries "$T"/Z "$T"/rZ
timeout 60 "$SNAP" -r "$REPO" restore "$IDX" "$T"/rX2 || fail "restore of X failed or hung while store S1 was running"
assert_same_entries "$T"/X "$T"/rX2
kill -0 "$ps1" 2>/dev/null || fail "store S1 ended early (while the others ran)"

touch "$T"/go
rc=0
wait "$ps1" || rc=$?
wait "$feeder" || true
cat "$T"/S1.err
[[ $rc -eq 0 ]] || fail "store S1 exited $rc after the others ran alongside"
IDS1=$(json_get id <"$T"/S1.json)
cat "$T"/shared "$T"/u1 "$T"/u2 >"$T"/S1.expected
"$SNAP" -r "$REPO" cat "$IDS1" >"$T"/S1.out || fail "cat S1 failed"
cmp "$T"/S1.expected "$T"/S1.out || fail "S1 read back differs"

note "everything still restores"
"$SNAP" -r "$REPO" restore "$IDY" "$T"/final-Y || fail "final restore Y failed"
assert_same_entries "$T"/Y "$T"/final-Y
"$SNAP" -r "$REPO" restore "$IDZ" "$T"/final-Z || fail "final restore Z failed"
assert_same_entries "$T"/Z "$T"/final-Z
n=$("$SNAP" -r "$REPO" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
assert_eq "$n" 4 "number of snapshots"
"$PACK_CHECK" "$REPO" >"$T"/pc.out || { cat "$T"/pc.out; fail "a pack is damaged after concurrent stores"; }
tail -n 1 "$T"/pc.out
note "a reader while the first store of a repository creates the index"
# The states a reader can find while the first writer sets up index/ (seen in practice by the
# list loop above): the directory without the LMDB files, and an LMDB environment without its
# tables (mdb_env_open done, the first write transaction not committed yet). Readers must not
# fail or crash; list does not even need the index.
init_repo "$T"/fresh1
mkdir "$T"/fresh1/index
rc=0
timeout 20 "$SNAP" -r "$T"/fresh1 list >/dev/null 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -eq 0 ]] || defer_fail "list on a repository whose index/ is being created (empty directory) exited $rc"
require mdb_load
init_repo "$T"/fresh2
mkdir "$T"/fresh2/index
printf 'VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\nDATA=END\n' | mdb_load "$T"/fresh2/index ||
    fail "mdb_load could not create an empty LMDB environment"
rc=0
timeout 20 "$SNAP" -r "$T"/fresh2 list >/dev/null 2>"$T"/stderr || rc=$?
cat "$T"/stderr
if ((rc >= 128)); then
    defer_fail "list crashed (exit $rc, signal $((rc - 128))) on an index environment without tables"
elif ((rc != 0)); then
    defer_fail "list on an index environment without tables exited $rc"
fi
note "an exclusive lock holder (a future prune or repair) makes writers exit 5, readers go on"
LREPO="$T/locked"
init_repo "$LREPO"
echo before | "$SNAP" -q -r "$LREPO" store --stdin --name before >/dev/null || fail "store before the lock"
"$SNAP" -q -r "$LREPO" key export "$T/locked.key"
packs_before=$(find "$LREPO/packs" -type f | sort)
# The lock must die with the process that is killed: take it on an fd of the process itself.
(exec 9>>"$LREPO/locks/repository" && flock -x 9 && exec sleep 600) &
holder=$!
cleanup_hooks+=("kill $holder 2>/dev/null")
holder_locked() { ! flock -n -s "$LREPO/locks/repository" true 2>/dev/null; }
wait_until 10 holder_locked || fail "the holder did not take the lock within 10 s"
echo blocked | expect_exit 5 "$SNAP" -r "$LREPO" store --stdin --name blocked
grep -q "locked exclusively" "$T/stderr" || fail "no message naming the lock"
seg="$T/000000010000000000000001"
python3 - "$seg" <<'PY'
import struct, sys
seg = 16 << 20
hdr = struct.pack("<HHIQIxxxxQII", 0xD110, 0x0002, 1, seg, 0, 7, seg, 8192)  # segment 1 starts at LSN seg
open(sys.argv[1], "wb").write(hdr + bytes(seg - len(hdr)))
PY
expect_exit 5 "$PITR_BIN/pitr-agent" -r "$LREPO" --key-file "$T/locked.key" -n n1 \
    archive-wal "$seg" 000000010000000000000001
[[ $(find "$LREPO/packs" -type f | sort) == "$packs_before" ]] || fail "a blocked writer wrote a pack"
"$SNAP" -r "$LREPO" list >/dev/null || fail "list was blocked by the exclusive lock"
[[ $("$SNAP" -r "$LREPO" cat before) == before ]] || fail "cat was blocked by the exclusive lock"
kill $holder; wait $holder 2>/dev/null || true
echo after | "$SNAP" -q -r "$LREPO" store --stdin --name after >/dev/null || fail "store after the lock was released"

echo "concurrent checks done"
