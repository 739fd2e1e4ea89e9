#!/usr/bin/env bash
# A repository on a full filesystem: the store that runs out of space fails cleanly with
# "No space left", leaves no snapshot, no spool files and no torn pack behind, and everything
# stored before still reads. With space again, storing works.
# Run twice: with the default pack size (the failing store never publishes a pack) and with
# 1 MiB packs (it publishes several before the disk fills up). Then with only the index full,
# a few KiB left, where LMDB's write of its pages comes up short: "No space left" too.
. "$(dirname "$0")/lib.sh"
require mount umount mountpoint df
[[ $(id -u) -eq 0 ]] || fail "this test mounts a tmpfs: run it as root"
PACK_CHECK=$(helper pack-check)

mkdir -p "$T"/small/d
random_file "$T"/small/d/a 1
seq 1 50000 >"$T"/small/b
ln -s d/a "$T"/small/link
mkdir -p "$T"/bigsrc
random_file "$T"/bigsrc/big 60

used_kb() { df -k --output=used "$1" | tail -n 1 | tr -d ' '; }

scenario() { # label pack-size-args...
    local label=$1 mnt=$T/mnt-$1
    shift
    note "scenario $label"
    mkdir -p "$mnt"
    mount -t tmpfs -o size=24m tmpfs "$mnt" || fail "cannot mount a tmpfs on $mnt (root with CAP_SYS_ADMIN needed)"
    cleanup_hooks+=("! mountpoint -q '$mnt' || umount -l '$mnt'")
    local repo=$mnt/repo
    init_repo "$repo" "$@"
    local id1
    id1=$(store_id "$repo" "$T"/small --name small)
    local before
    before=$(used_kb "$mnt")

    local rc=0
    "$SNAP" -r "$repo" store "$T"/bigsrc --name big >"$T"/out 2>"$T"/stderr || rc=$?
    cat "$T"/out "$T"/stderr
    [[ $rc -ne 0 ]] || fail "$label: storing 60 MB into a 24 MB filesystem succeeded"
    grep -q "No space left" "$T"/stderr || fail "$label: the error does not say 'No space left'"
    grep -q complete "$T"/out && fail "$label: a failed store printed 'complete'"
    echo "$label: store failed with exit $rc; used ${before} KiB before, $(used_kb "$mnt") KiB after"

    "$SNAP" -r "$repo" list --json >"$T"/list.json || fail "$label: list after the failed store failed"
    local n
    n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T"/list.json)
    assert_eq "$n" 1 "$label: snapshots listed after the failed store"
    grep -q '"big"' "$T"/list.json && fail "$label: the failed snapshot is listed"
    local left
    left=$(find "$repo"/tmp -type f | wc -l)
    [[ $left -eq 0 ]] || { ls -la "$repo"/tmp; fail "$label: $left spool files remain in tmp/ after the failed store"; }
    "$PACK_CHECK" "$repo" >"$T"/pc.out || { cat "$T"/pc.out; fail "$label: a torn or damaged pack is visible after ENOSPC"; }
    tail -n 1 "$T"/pc.out
    rm -rf "$T"/r1
    "$SNAP" -r "$repo" restore "$id1" "$T"/r1 || fail "$label: restore of the first snapshot after ENOSPC failed"
    assert_same_entries "$T"/small "$T"/r1

    note "$label: more space"
    mount -o remount,size=200m "$mnt" || fail "cannot grow the tmpfs"
    local id2
    id2=$(store_id "$repo" "$T"/bigsrc --name big-again)
    rm -rf "$T"/r2
    "$SNAP" -r "$repo" restore "$id2" "$T"/r2 || fail "$label: restore of the snapshot stored after growing failed"
    cmp "$T"/bigsrc/big "$T"/r2/big || fail "$label: the big file restored differs"
    rm -rf "$T"/r1 "$T"/r2
    "$SNAP" -r "$repo" restore "$id1" "$T"/r1 || fail "$label: restore of the first snapshot at the end failed"
    assert_same_entries "$T"/small "$T"/r1
    "$PACK_CHECK" "$repo" >"$T"/pc.out || { cat "$T"/pc.out; fail "$label: damaged pack at the end"; }
    rm -rf "$T"/r1
    umount "$mnt" || fail "could not unmount $mnt"
}

scenario default-packs
scenario small-packs --pack-size 1048576

note "scenario index-full"
repo=$T/repo-index
init_repo "$repo"
id1=$(store_id "$repo" "$T"/small --name small)
cp -a "$repo"/index "$T"/index-copy
mount -t tmpfs -o size=4m tmpfs "$repo"/index || fail "cannot mount a tmpfs on $repo/index"
cleanup_hooks+=("! mountpoint -q '$repo/index' || umount -l '$repo/index'")
cp -a "$T"/index-copy/. "$repo"/index/
# Fill it up to 8 KiB: room for a page or two of the next commit, not for all of it.
free_kb=$(df -k --output=avail "$repo"/index | tail -n 1 | tr -d ' ')
dd if=/dev/zero of="$repo"/index/filler bs=1k count=$((free_kb - 8)) status=none 2>/dev/null || true
rc=0
"$SNAP" -r "$repo" store "$T"/bigsrc --name big >"$T"/out 2>"$T"/stderr || rc=$?
cat "$T"/out "$T"/stderr
[[ $rc -ne 0 ]] || fail "index-full: a store whose index cannot grow succeeded"
grep -q "No space left" "$T"/stderr || fail "index-full: the error does not say 'No space left'"
rm -f "$repo"/index/filler
assert_eq "$("$SNAP" -r "$repo" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" \
    1 "index-full: snapshots listed after the failed store"
rm -rf "$T"/r1
"$SNAP" -r "$repo" restore "$id1" "$T"/r1 || fail "index-full: restore of the first snapshot failed"
assert_same_entries "$T"/small "$T"/r1
id2=$(store_id "$repo" "$T"/bigsrc --name big-again)
rm -rf "$T"/r2
"$SNAP" -r "$repo" restore "$id2" "$T"/r2 || fail "index-full: restore after space came back failed"
cmp "$T"/bigsrc/big "$T"/r2/big || fail "index-full: the big file restored differs"
umount "$repo"/index || fail "could not unmount $repo/index"
echo "diskfull ok"
