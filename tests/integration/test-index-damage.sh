#!/usr/bin/env bash
# The index is a cache: a damaged one is dropped and rebuilt from the packs, never a crash.
# LMDB maps data.mdb and follows page numbers up to the last its meta page names, so a file
# cut short used to kill every command and the mount with SIGBUS. Here: data.mdb truncated,
# then overwritten with garbage, then cut short again under a user who cannot rebuild it; each
# time list, restore and a read through the mount give the right bytes or a clear error.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint runuser
MOUNT="$PITR_BIN/mount.pitrfs"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"

REPO=$T/repo
MNT=$T/mnt
mkdir -p "$MNT" "$T"/src/sub
cleanup_hooks+=('mountpoint -q "$MNT" && { fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"; }')
init_repo "$REPO"
random_file "$T"/src/sub/data 3
seq 1 200000 >"$T"/src/text
ID=$(store_id "$REPO" "$T"/src --name src)
INDEX=$REPO/index/data.mdb
[[ $(stat -c %s "$INDEX") -gt 16384 ]] || fail "the index is too small to be cut short"

check_reads() { # what: every read gives the right bytes, and the index was rebuilt
    local what=$1 out=$T/restored-$1
    "$SNAP" -r "$REPO" list >"$T"/list.out 2>"$T"/list.err; local rc=$?
    [[ $rc -eq 0 ]] || fail "list with $what exited $rc: $(cat "$T"/list.err)"
    grep -q "$ID" "$T"/list.out || fail "list with $what does not show $ID"
    grep -q "damaged: rebuilding it from the packs" "$T"/list.err ||
        fail "list with $what did not say it rebuilt the index: $(cat "$T"/list.err)"
    "$SNAP" -r "$REPO" restore "$ID" "$out" --no-sync || fail "restore after $what failed"
    assert_same_entries "$T"/src "$out"
    "$MOUNT" "$REPO" "$MNT" || fail "mount after $what failed"
    cmp "$T"/src/sub/data "$MNT"/snapshots/src/sub/data || fail "read through the mount after $what differs"
    timeout 10 fusermount3 -u "$MNT" || fail "unmount failed"
}

note "data.mdb cut to 16 KiB (its meta pages intact, the tree's pages gone)"
truncate -s 16384 "$INDEX"
check_reads truncated

note "data.mdb overwritten with garbage"
head -c 65536 /dev/urandom >"$INDEX"
check_reads garbage

note "data.mdb replaced by a FIFO"
rm -f "$INDEX" && mkfifo "$INDEX"
check_reads fifo

note "locations in the index that no record can have: damage (exit 4), never EINVAL or ENOMEM"
TAMPER=$(helper index-tamper)
for field in "chunks-record-off 0xfffffffffffffff0" "chunks-record-len 0" "chunks-record-len 0xffffffff"; do
    cp -a "$REPO" "$T"/tampered
    # shellcheck disable=SC2086
    "$TAMPER" "$T"/tampered/index $field >/dev/null || fail "index-tamper $field changed nothing"
    rc=0
    "$SNAP" -r "$T"/tampered restore "$ID" "$T"/tampered-out --no-sync 2>"$T"/tampered.err || rc=$?
    [[ $rc -eq 4 ]] || fail "restore with index $field exited $rc, expected 4: $(cat "$T"/tampered.err)"
    grep -q "index is damaged" "$T"/tampered.err || fail "the error for $field does not name the index: $(cat "$T"/tampered.err)"
    rm -rf "$T"/tampered "$T"/tampered-out
done

note "cut short, and the user running the command cannot rebuild it: a clear error, exit 4"
chmod a+x "$T"
chmod -R a+rX "$REPO"
chmod a-w "$REPO"/index
chmod a+rw "$REPO"/index/lock.mdb
truncate -s 16384 "$INDEX"
rc=0
runuser -u postgres -- env PITR_PASSPHRASE="$PITR_PASSPHRASE" "$SNAP" -r "$REPO" restore "$ID" "$T"/ro \
    --no-sync 2>"$T"/ro.err || rc=$?
cat "$T"/ro.err
[[ $rc -eq 4 ]] || fail "restore with a damaged index it cannot rebuild exited $rc, expected 4"
grep -q "is damaged" "$T"/ro.err || fail "the error does not say the index is damaged"
echo "ok"
