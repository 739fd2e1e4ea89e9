#!/usr/bin/env bash
# Delta records through the command line: a data directory stored again after some pages
# changed stores those pages as deltas of the previous snapshot (chosen by name, else by path,
# or by --parent), writes a fraction of what a store without a parent writes, and every
# snapshot restores byte for byte, also after the index is rebuilt from the packs alone. A week
# of daily changes to the same pages leaves every delta at depth 1 (framed records against
# pages stored whole, format version 4: no chains), and every day restores and reads through
# the mount byte for byte.
. "$(dirname "$0")/lib.sh"

REPO=$T/repo
SRC=$T/pgdata
init_repo "$REPO"

# A relation file (page-cut by --page-files=auto) of 512 pages of table-like text.
mkdir -p "$SRC"/base/5 "$SRC"/global
python3 - "$SRC"/base/5/16384 <<'PY'
import random, sys
page = 8192
rnd = random.Random(5)
with open(sys.argv[1], "wb") as f:
    for p in range(512):
        rows = b"".join(b"aid %08d bid %d abalance %7d note %016x\n"
                        % (p * 100 + r, r % 7, rnd.randrange(10**7), rnd.getrandbits(64))
                        for r in range(200))
        f.write(rows[:page])
PY
echo "not a page file" >"$SRC"/PG_VERSION
# change_pages GENERATION [SET]: rewrite one row's balance in 40 pages, as UPDATEs would; the
# pages are chosen by SET (default: by the generation).
change_pages() {
    python3 - "$SRC"/base/5/16384 "$1" "${2:-$1}" <<'PY'
import sys
path, gen, pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    for k in range(40):
        page = (k * 13 + pages) % 512
        f.seek(page * 8192 + 1000 + (gen % 5) * 64)
        f.write(b"%08d" % (gen * 7919 + k))
PY
}
stats() { "$SNAP" -r "$REPO" show "$1" --json | json_get "meta.stats.$2"; }
keep() { mkdir -p "$T/copies/$1" && cp -a "$SRC"/. "$T/copies/$1"/; }

note "first snapshot: nothing to build on"
A=$(store_id "$REPO" "$SRC" --name db)
assert_eq "$(stats "$A" delta_chunks)" 0 "delta chunks of the first snapshot"
keep "$A"

note "same name: deltas of the previous snapshot of that name"
change_pages 1
"$SNAP" -r "$REPO" store "$SRC" --name db --json >"$T"/b.json 2>"$T"/b.err || fail "store B failed"
B=$(json_get id <"$T"/b.json)
grep -q "parent snapshot $A" "$T"/b.err || fail "store B does not say it builds on $A"
assert_eq "$(stats "$B" delta_chunks)" 40 "delta chunks of B"
assert_eq "$("$SNAP" -r "$REPO" show "$B" --json | json_get meta.parent)" "$A" "parent of B"
keep "$B"

note "--parent none: the same change stored whole costs more"
change_pages 2
C=$(store_id "$REPO" "$SRC" --name other --parent none)
assert_eq "$(stats "$C" delta_chunks)" 0 "delta chunks with --parent none"
keep "$C"
change_pages 3
D=$(store_id "$REPO" "$SRC" --name db2)  # no snapshot of that name: found by path (C)
assert_eq "$("$SNAP" -r "$REPO" show "$D" --json | json_get meta.parent)" "$C" "parent found by path"
assert_eq "$(stats "$D" delta_chunks)" 40 "delta chunks of D"
keep "$D"
whole=$(stats "$C" stored_bytes) delta=$(stats "$D" stored_bytes)
echo "40 changed pages: $whole bytes stored whole, $delta bytes as deltas"
[[ $((delta * 3)) -lt $whole ]] || fail "deltas ($delta bytes) are not well below whole pages ($whole bytes)"

note "--parent by id, and a --parent that does not exist"
change_pages 4
E=$(store_id "$REPO" "$SRC" --name db --parent "$A")
assert_eq "$("$SNAP" -r "$REPO" show "$E" --json | json_get meta.parent)" "$A" "explicit parent"
[[ $(stats "$E" delta_chunks) -gt 0 ]] || fail "no deltas against an explicit parent"
keep "$E"
expect_exit 64 "$SNAP" -r "$REPO" store "$SRC" --parent no-such-snapshot
grep -q "no-such-snapshot" "$T"/stderr || fail "the error does not name the missing parent"
assert_eq "$("$SNAP" -r "$REPO" list --json | json_get 5.id 2>/dev/null || echo none)" none \
    "a refused store added a snapshot"

note "a week of history under one name: the same pages change every day"
WEEK=()
for day in 1 2 3 4 5 6 7; do
    change_pages $((day + 10)) 4
    WEEK+=("$(store_id "$REPO" "$SRC" --name week)")
    keep "${WEEK[-1]}"
done
[[ $(stats "${WEEK[-1]}" delta_chunks) -ge 40 ]] || fail "day 7 stored no deltas"
"$(helper pack-check)" "$REPO" >"$T"/pack-check.out || { cat "$T"/pack-check.out; fail "pack-check"; }
grep '^records:' "$T"/pack-check.out
grep -q '^records: .* 0 chained delta (deepest 0), [1-9][0-9]* framed delta (deepest 1)$' \
    "$T"/pack-check.out || fail "delta records are chained or deeper than 1: $(grep '^records:' "$T"/pack-check.out)"

note "every snapshot restores byte for byte"
for id in "$A" "$B" "$C" "$D" "$E" "${WEEK[@]}"; do
    "$SNAP" -q -r "$REPO" restore "$id" "$T/r-$id" || fail "restore of $id failed"
    assert_same_entries "$T/copies/$id" "$T/r-$id"
done

note "every day of the week reads through the mount byte for byte"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
mkdir -p "$T"/mnt
"$PITR_BIN"/mount.pitrfs "$REPO" "$T"/mnt --foreground 2>"$T"/mount.log &
MOUNT_PID=$!
# The mount process must be gone before the index is removed below (it holds it open).
unmount_week() {
    fusermount3 -u "$T"/mnt 2>/dev/null || fusermount3 -uz "$T"/mnt 2>/dev/null || true
    kill $MOUNT_PID 2>/dev/null || true # it may have exited with the unmount
    wait $MOUNT_PID 2>/dev/null || true
}
cleanup_hooks+=(unmount_week)
for i in $(seq 100); do mountpoint -q "$T"/mnt && break; sleep 0.1; done
mountpoint -q "$T"/mnt || fail "the mount did not come up: $(cat "$T"/mount.log)"
for id in "${WEEK[@]}"; do
    cmp "$T/copies/$id"/base/5/16384 "$T"/mnt/snapshots/"$id"/base/5/16384 ||
        fail "day snapshot $id reads other bytes through the mount"
done
unmount_week

note "again with the index rebuilt from the packs"
rm -rf "$REPO"/index "$T"/r-*
for id in "$E" "$B"; do
    "$SNAP" -q -r "$REPO" restore "$id" "$T/r-$id" || fail "restore of $id after the index was removed failed"
    assert_same_entries "$T/copies/$id" "$T/r-$id"
done
echo "ok"
