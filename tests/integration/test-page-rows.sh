#!/usr/bin/env bash
# A damaged index costs deduplication, never bytes. The index's `pages` rows say where a run
# holds a page; a writer refers to a page by such a row only when the row's tag checks
# (docs/FORMAT.md section 10). Here every row's run offset is moved back by one page, as a
# flipped bit could, and a second tree holding a page of the first is stored: its restore
# must give that page, not its neighbour. The same store with the index left alone takes the
# page from the run (stores nothing new for it).
. "$(dirname "$0")/lib.sh"

TAMPER=$(helper index-tamper)
REPO=$T/repo
init_repo "$REPO"

# A relation file of 16 distinct pages (page-cut, stored as one run).
mkdir -p "$T"/a/base/16384 "$T"/b/base/16384
python3 - "$T"/a/base/16384/16385 <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    for p in range(16):
        f.write((b"page %02d " % p) * 1024)
PY
store_id "$REPO" "$T"/a --name a >/dev/null
# The second tree's relation file is page 5 of the first.
dd if="$T"/a/base/16384/16385 of="$T"/b/base/16384/20000 bs=8192 skip=5 count=1 status=none

note "an intact index: page 5 comes from the run, page 5 is not stored again"
cp -a "$REPO" "$T"/intact
"$SNAP" -r "$T"/intact store "$T"/b --name b --json >"$T"/intact.json || fail "store into the intact copy failed"
intact_new=$(json_get stats.new_bytes <"$T"/intact.json)
[[ $intact_new -lt 8192 ]] || fail "page 5 was stored anew with an intact index ($intact_new new bytes)"

note "every pages row moved back by one page"
changed=$("$TAMPER" "$REPO"/index pages-offset -8192) || fail "index-tamper changed nothing"
[[ $changed -ge 15 ]] || fail "only $changed page rows were changed"
B=$(store_id "$REPO" "$T"/b --name b)
"$SNAP" -r "$REPO" restore "$B" "$T"/restored --no-sync || fail "restore of b failed"
cmp "$T"/b/base/16384/20000 "$T"/restored/base/16384/20000 ||
    fail "the restore of b holds other bytes than page 5 (a damaged index row was trusted)"
damaged_new=$("$SNAP" -r "$REPO" show "$B" --json | json_get meta.stats.new_bytes)
[[ $damaged_new -ge 8192 ]] || fail "page 5 was not stored anew under a damaged row ($damaged_new new bytes)"
"$SNAP" -r "$REPO" restore "$("$SNAP" -r "$REPO" list --json | json_get 0.id)" "$T"/restored-a --no-sync ||
    fail "restore of a failed"
cmp "$T"/a/base/16384/16385 "$T"/restored-a/base/16384/16385 || fail "a no longer restores"
echo "ok"
