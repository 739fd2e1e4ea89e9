#!/usr/bin/env bash
# The files cache through the command line: storing an unchanged tree again reads none of its
# files and says so; --full-read reads them all; a file rewritten with its old size and
# modification time put back, a file replaced by another, and a new file are read; `list`
# shows the tree's size, not what was read; every snapshot restores byte for byte, and a
# snapshot made unread still restores after the index (and with it the cache) is deleted.
. "$(dirname "$0")/lib.sh"

REPO=$T/repo
SRC=$T/src
init_repo "$REPO"
mkdir -p "$SRC"/base/5 "$SRC"/etc
random_file "$SRC"/base/5/16384 2 # a relation file: cut in pages
random_file "$SRC"/big 3
echo "config" >"$SRC"/etc/conf
echo 15 >"$SRC"/PG_VERSION
ln -s etc/conf "$SRC"/link
stats() { "$SNAP" -r "$REPO" show "$1" --json | json_get "meta.stats.$2"; }
keep() { mkdir -p "$T/copies/$1" && cp -a "$SRC"/. "$T/copies/$1"/; }
# A change time is trusted once it is more than two seconds older than the store's start.
settle() { sleep 2.2; }

note "first store reads everything"
settle
A=$(store_id "$REPO" "$SRC" --name t)
assert_eq "$(stats "$A" files_unchanged)" 0 "unchanged files of the first store"
keep "$A"

note "unchanged tree: nothing is read"
"$SNAP" -r "$REPO" store "$SRC" --name t >"$T"/b.out 2>"$T"/b.err || fail "store B failed"
cat "$T"/b.out
grep -q "^4 unchanged files (5.0 MiB) taken from snapshot $A without reading them" "$T"/b.out ||
    fail "store B does not say it took 4 unchanged files from $A"
B=$("$SNAP" -r "$REPO" list --json | json_get 1.id)
assert_eq "$(stats "$B" files_unchanged)" 4 "unchanged files of B"
assert_eq "$(stats "$B" bytes_unchanged)" $((5 * 1024 * 1024 + 7 + 3)) "unchanged bytes of B"
assert_eq "$(stats "$B" bytes)" "$(stats "$A" bytes)" "bytes of B"
[[ $(stats "$B" bytes_in) -lt 65536 ]] || fail "store B read $(stats "$B" bytes_in) bytes"
size_b=$("$SNAP" -r "$REPO" list --json | json_get 1.size)
assert_eq "$size_b" $((5 * 1024 * 1024 + 7 + 3)) "list: size of B"

note "--full-read reads every file"
C=$(store_id "$REPO" "$SRC" --name t --full-read)
assert_eq "$(stats "$C" files_unchanged)" 0 "unchanged files with --full-read"
[[ $(stats "$C" bytes_in) -ge $((5 * 1024 * 1024)) ]] || fail "--full-read read only $(stats "$C" bytes_in) bytes"

note "changed files are read: same size and mtime put back, replaced, new"
touch -r "$SRC"/big "$T"/big.mtime
random_file "$SRC"/big 3
touch -r "$T"/big.mtime "$SRC"/big
assert_eq "$(stat -c '%s %Y' "$SRC"/big)" "$(stat -c '%s %Y' "$T"/copies/"$A"/big)" "size and mtime of big"
echo "other" >"$SRC"/etc/conf.new && touch -r "$SRC"/etc/conf "$SRC"/etc/conf.new
mv "$SRC"/etc/conf.new "$SRC"/etc/conf
echo "new" >"$SRC"/new
settle
D=$(store_id "$REPO" "$SRC" --name t)
assert_eq "$(stats "$D" files_unchanged)" 2 "unchanged files of D (the relation file, PG_VERSION)"
keep "$D"
E=$(store_id "$REPO" "$SRC" --name t)
assert_eq "$(stats "$E" files_unchanged)" 5 "unchanged files of E"

note "every snapshot restores byte for byte"
for pair in "$A:$A" "$B:$A" "$C:$A" "$D:$D" "$E:$D"; do
    id=${pair%%:*} want=${pair#*:}
    "$SNAP" -q -r "$REPO" restore "$id" "$T/r-$id" || fail "restore of $id failed"
    assert_same_entries "$T/copies/$want" "$T/r-$id"
done

note "without the index (and its cache) everything is read again, and B still restores"
rm -rf "$REPO"/index "$T"/r-*
F=$(store_id "$REPO" "$SRC" --name t)
assert_eq "$(stats "$F" files_unchanged)" 0 "unchanged files after the index was removed"
"$SNAP" -q -r "$REPO" restore "$B" "$T/r-$B" || fail "restore of $B after the index was removed failed"
assert_same_entries "$T/copies/$A" "$T/r-$B"
echo "ok"
