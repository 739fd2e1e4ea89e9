#!/usr/bin/env bash
# Snapshot records that do not load are listed, and nothing picks a snapshot past them.
# A repository of the postgres user where root stored the newest snapshot of "db": its record
# is made root's, mode 0600. As postgres, `list` shows it as unreadable ("Permission denied") and
# exits 1, also with --json (an entry with an "error" field); `show latest`, `show db`, an id
# prefix, `restore latest`, `store` choosing its parent and the mount refuse, naming the
# record, instead of taking the older snapshot; full ids of the others still work. Then the
# record, readable again but damaged: listed as damaged, exit 4, the same refusals; `delete`
# refuses it without --force and removes it with --force, after which "latest" is the older one.
. "$(dirname "$0")/lib.sh"
require runuser fusermount3 mountpoint
as_pg() { runuser -u postgres -- "$@"; }
chown postgres: "$T"
REPO=$T/repo
init_repo "$REPO"
chown -R postgres: "$REPO"
mkdir "$T"/src
echo one >"$T"/src/f
chown -R postgres: "$T"/src
pg_store() { as_pg "$SNAP" -r "$REPO" store "$@" --json | json_get id; }
A=$(pg_store "$T"/src --name db)
echo two >>"$T"/src/f
B=$(pg_store "$T"/src --name db)
echo three >>"$T"/src/f
C=$(store_id "$REPO" "$T"/src --name db)
chown root: "$REPO/snapshots/$C" # root's store gives it to the owner: take it back
[[ $(stat -c %U "$REPO/snapshots/$C") == root ]] || fail "sanity: snapshot $C is not root's"
echo "A=$A B=$B C=$C"
record_count() { find "$REPO"/snapshots -type f | wc -l; }

note "list as postgres: the record root wrote is listed as unreadable, exit 1"
expect_exit 1 as_pg "$SNAP" -r "$REPO" list >"$T"/list.out
cat "$T"/list.out
grep -q "^$A " "$T"/list.out && grep -q "^$B " "$T"/list.out || fail "list does not show the readable snapshots"
grep "^$C " "$T"/list.out | grep -q "snapshots/$C\" cannot be read: Permission denied" ||
    fail "list does not show snapshot record $C as unreadable with the reason"
grep -q "1 of 3 snapshot records could not be read" "$T"/stderr || fail "list does not say on stderr that a record could not be read"

note "list --json: an entry with an error, still valid JSON, exit 1"
expect_exit 1 as_pg "$SNAP" -r "$REPO" list --json >"$T"/list.json
python3 - "$T"/list.json "$A" "$B" "$C" <<'PY' || fail "list --json does not describe the unreadable record"
import json, sys
entries = json.load(open(sys.argv[1]))
a, b, c = sys.argv[2:]
by_id = {e["id"]: e for e in entries}
assert set(by_id) == {a, b, c}, f"ids {sorted(by_id)}"
assert "error" not in by_id[a] and by_id[a]["name"] == "db", by_id[a]
bad = by_id[c]
assert "Permission denied" in bad["error"] and bad["damaged"] is False, bad
assert bad["object"] == f"snapshots/{c}" and "kind" not in bad, bad
PY

note "commands that pick a snapshot refuse to guess past it"
for spec in latest db "${B:0:6}" "$C"; do
    expect_exit 1 as_pg "$SNAP" -r "$REPO" show "$spec" >"$T"/show.out
    grep -q "snapshots/$C\" cannot be read: Permission denied" "$T"/stderr ||
        fail "show $spec does not name the unreadable record $C"
    grep -q "no snapshot" "$T"/stderr && fail "show $spec says there is no snapshot"
    [[ ! -s $T/show.out ]] || fail "show $spec printed a snapshot: $(cat "$T"/show.out)"
done
grep -q "cannot be read: Permission denied" "$T"/stderr || fail "show by full id does not say why"
as_pg "$SNAP" -r "$REPO" show "$B" >"$T"/show.out || fail "show by the full id of a readable record failed"
grep -q "^id: *$B" "$T"/show.out || fail "show $B shows another snapshot"
expect_exit 1 as_pg "$SNAP" -r "$REPO" restore latest "$T"/r-latest
grep -q "snapshots/$C\" cannot be read" "$T"/stderr || fail "restore latest does not name the unreadable record"
[[ ! -e $T/r-latest ]] || fail "restore latest restored something"
before=$(record_count)
expect_exit 1 as_pg "$SNAP" -r "$REPO" store "$T"/src --name db
grep -q "snapshots/$C\" cannot be read" "$T"/stderr && grep -q "cannot choose the parent snapshot" "$T"/stderr ||
    fail "store does not refuse to choose its parent, naming the unreadable record"
assert_eq "$(record_count)" "$before" "records after the refused store"
D=$(pg_store "$T"/src --name db --parent "$B")
expect_exit 1 as_pg "$SNAP" -r "$REPO" delete latest
grep -q "snapshots/$C\" cannot be read" "$T"/stderr || fail "delete latest does not name the unreadable record"
expect_exit 1 as_pg "$SNAP" -r "$REPO" delete "$C"
grep -q "what it holds is unknown" "$T"/stderr || fail "delete of an unreadable record without --force is not refused"
[[ -f $REPO/snapshots/$C ]] || fail "the refused delete removed the record"

note "the mount refuses too"
MNT=$T/mnt
mkdir "$MNT" && chown postgres: "$MNT"
cleanup_hooks+=("mountpoint -q '$MNT' && fusermount3 -uz '$MNT'")
expect_exit 1 as_pg "$PITR_BIN"/mount.pitrfs "$REPO" "$MNT"
mountpoint -q "$MNT" && fail "the mount started while a snapshot record cannot be read"
grep -q "snapshots/$C\" cannot be read: Permission denied" "$T"/stderr || fail "the mount does not name the unreadable record"

note "readable again: listed, and latest is the newest"
chown -R postgres: "$REPO"
as_pg "$SNAP" -r "$REPO" list >/dev/null || fail "list failed with every record readable"
as_pg "$SNAP" -r "$REPO" show latest >"$T"/show.out || fail "show latest failed"
grep -q "^id: *$D" "$T"/show.out || fail "show latest is not $D, the newest snapshot"
as_pg "$SNAP" -r "$REPO" delete "$D" 2>/dev/null || fail "delete $D failed"

note "a damaged record: listed as damaged, exit 4, the same refusals"
flip_byte "$REPO/snapshots/$C" 40 >/dev/null
expect_exit 4 as_pg "$SNAP" -r "$REPO" list >"$T"/list.out
cat "$T"/list.out
grep "^$C " "$T"/list.out | grep -q "snapshots/$C\" is damaged" || fail "list does not show $C as damaged"
expect_exit 4 as_pg "$SNAP" -r "$REPO" list --json >"$T"/list.json
python3 - "$T"/list.json "$C" <<'PY' || fail "list --json does not mark the record damaged"
import json, sys
bad = [e for e in json.load(open(sys.argv[1])) if e["id"] == sys.argv[2]][0]
assert bad["damaged"] is True and bad["error"] == "is damaged", bad
PY
expect_exit 4 as_pg "$SNAP" -r "$REPO" show latest
grep -q "snapshots/$C\" is damaged" "$T"/stderr || fail "show latest does not name the damaged record"
expect_exit 4 "$SNAP" -r "$REPO" restore db "$T"/r-db
[[ ! -e $T/r-db ]] || fail "restore db restored something"
expect_exit 4 as_pg "$SNAP" -r "$REPO" delete "$C"
[[ -f $REPO/snapshots/$C ]] || fail "delete without --force removed the damaged record"
as_pg "$SNAP" -r "$REPO" delete --force "$C" 2>"$T"/stderr || { cat "$T"/stderr; fail "delete --force of the damaged record failed"; }
grep -q "deleted snapshot $C" "$T"/stderr || fail "delete --force does not say it deleted $C"
[[ ! -e $REPO/snapshots/$C ]] || fail "delete --force left the damaged record"
as_pg "$SNAP" -r "$REPO" list >/dev/null || fail "list failed after the damaged record was deleted"
as_pg "$SNAP" -r "$REPO" show latest >"$T"/show.out || fail "show latest failed after the damaged record was deleted"
grep -q "^id: *$B" "$T"/show.out || fail "latest is not $B once $C is gone"
echo "unreadable ok"
