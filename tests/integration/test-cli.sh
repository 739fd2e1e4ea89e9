#!/usr/bin/env bash
# The command line: help, usage errors (exit 64), the repository from PITR_REPO, snapshot
# names, restore refusing to overwrite, delete, and JSON output.
. "$(dirname "$0")/lib.sh"
REPO=$T/repo

note "help and version"
"$SNAP" --help >"$T"/help || fail "--help did not exit 0"
for verb in init "key export" store list show info restore cat delete; do
    grep -q "pitr-snap.* $verb" "$T"/help || fail "--help does not mention '$verb'"
done
grep -q -- --repo "$T"/help || fail "--help does not mention --repo"
"$SNAP" -h >/dev/null || fail "-h did not exit 0"
"$SNAP" --version | grep -Eq '^pitr-snap [0-9]' || fail "--version does not print 'pitr-snap <version>'"

note "usage errors"
expect_exit 64 "$SNAP" -r "$T"/nowhere frobnicate
grep -q frobnicate "$T"/stderr || fail "the unknown verb is not named in the error"
expect_exit 64 "$SNAP"
expect_exit 64 "$SNAP" --no-such-option list
expect_exit 64 "$SNAP" -j notanumber -r "$T"/nowhere list
(
    unset PITR_REPO
    for cmd in list info "show latest" "store $T" "restore latest $T/x" "cat latest" \
        "delete latest" "key export $T/k" init; do
        # shellcheck disable=SC2086
        expect_exit 64 "$SNAP" $cmd
        grep -q -- --repo "$T"/stderr || fail "'$cmd' without a repository: message does not mention --repo"
    done
)
[[ ! -e $T/k && ! -e $T/x ]] || fail "a command without a repository created its output"

init_repo "$REPO"
export PITR_REPO=$REPO # the default repository from now on
mkdir -p "$T"/src/dir
echo one >"$T"/src/dir/file
echo two >"$T"/src/top
"$SNAP" list >/dev/null || fail "list with PITR_REPO failed"
expect_exit 64 "$SNAP" list extra-argument
expect_exit 64 "$SNAP" store
expect_exit 64 "$SNAP" store "$T"/src "$T"/src
expect_exit 64 "$SNAP" store --stdin </dev/null # a stream needs --name
expect_exit 64 "$SNAP" store "$T"/src --page-files=sometimes
expect_exit 64 "$SNAP" restore latest
expect_exit 64 "$SNAP" key export
expect_exit 64 "$SNAP" -r "$T"/bad-init init --scrypt-n 1024 --pack-size 1000
[[ ! -e $T/bad-init/config ]] || fail "init with an invalid pack size created a repository"
n=$("$SNAP" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
assert_eq "$n" 0 "snapshots after usage errors"

note "snapshot names"
ID1=$(store_id "$REPO" "$T"/src --name first)
echo changed >"$T"/src/top
ID2=$("$SNAP" -j 1 store "$T"/src --name second --json | json_get id)
"$SNAP" show latest --json >"$T"/latest.json || fail "show latest --json failed"
python3 -m json.tool "$T"/latest.json >/dev/null || fail "show latest --json is not valid JSON"
assert_eq "$(json_get kind <"$T"/latest.json)" tree "kind of show latest"
for key in id name time hostname size meta.stats.files; do json_get "$key" <"$T"/latest.json >/dev/null; done
[[ $(json_get id <"$T"/latest.json) == "$ID2" ]] ||
    defer_fail "show latest is $(json_get name <"$T"/latest.json) ($(json_get id <"$T"/latest.json)), not the snapshot stored last (second, $ID2)"
# Snapshots stored within the same second (times have 1 s resolution): "latest", and a name
# shared by two snapshots, must still mean the one stored last.
wrong=0 wrong_name=0
for ((k = 0; k < 10; k++)); do
    ida=$(echo "a$k" | "$SNAP" store --stdin --name "twin$k" --json | json_get id)
    idb=$(echo "b$k" | "$SNAP" store --stdin --name "twin$k" --json | json_get id)
    got=$("$SNAP" show latest --json | json_get id)
    [[ $got == "$idb" ]] || { echo "latest after storing $ida then $idb is $got"; wrong=$((wrong + 1)); }
    got=$("$SNAP" show "twin$k" --json | json_get id)
    [[ $got == "$idb" ]] || { echo "twin$k after storing $ida then $idb is $got"; wrong_name=$((wrong_name + 1)); }
done
((wrong_name == 0)) || defer_fail "a name shared by two snapshots did not mean the one stored last in $wrong_name of 10 tries"
((wrong == 0)) || defer_fail "'latest' was not the snapshot stored last in $wrong of 10 tries (two stores within a second)"
"$SNAP" show first | grep -q "$ID1" || fail "show by name does not find the snapshot"
"$SNAP" show "${ID1:0:6}" | grep -q "$ID1" || fail "show by id prefix does not find the snapshot"
"$SNAP" show "$ID1" | grep -q "name: *first" || fail "show does not print the name"
rc=0
"$SNAP" show 0000000000000000 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] || fail "show of an unknown snapshot succeeded"
grep -q "no snapshot" "$T"/stderr || fail "show of an unknown snapshot: message does not say 'no snapshot'"
"$SNAP" info --json | python3 -m json.tool >/dev/null || fail "info --json is not valid JSON"
"$SNAP" list --json | python3 -m json.tool >/dev/null || fail "list --json is not valid JSON"

note "restore refuses a non-empty target"
mkdir -p "$T"/target/dir
echo "mine" >"$T"/target/top
echo "also mine" >"$T"/target/dir/file
echo "unrelated" >"$T"/target/unrelated
cp -a "$T"/target "$T"/target.orig
rc=0
"$SNAP" restore "$ID2" "$T"/target 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "restore into a non-empty directory without --force succeeded"
grep -qi "not empty" "$T"/stderr || fail "the error does not say the target is not empty"
assert_same_tree "$T"/target.orig "$T"/target
"$SNAP" restore "$ID2" "$T"/target --force >/dev/null || fail "restore --force failed"
assert_eq "$(cat "$T"/target/top)" changed "top after restore --force"
assert_eq "$(cat "$T"/target/dir/file)" one "dir/file after restore --force"
# A stream restores to a file and does not overwrite one either.
echo "stream data" | "$SNAP" store --stdin --name s >/dev/null || fail "store --stdin failed"
"$SNAP" restore s "$T"/stream.out >/dev/null || fail "restore of a stream into a file failed"
assert_eq "$(cat "$T"/stream.out)" "stream data" "restored stream"
echo "keep" >"$T"/stream.keep
rc=0
"$SNAP" restore s "$T"/stream.keep 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || fail "restore of a stream over an existing file without --force succeeded"
assert_eq "$(cat "$T"/stream.keep)" keep "file a stream restore must not overwrite"
rc=0
"$SNAP" cat "$ID1" >/dev/null 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] || fail "cat of a tree snapshot succeeded"
grep -q "not a stream" "$T"/stderr || fail "cat of a tree: message does not say it is not a stream"

note "delete"
"$SNAP" delete "$ID1" || fail "delete failed"
# Compare ids, not text: the snapshot stored after it names the deleted one as its parent.
listed=$("$SNAP" list --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))') ||
    fail "list --json failed after delete"
[[ " $listed " != *" $ID1 "* ]] || fail "a deleted snapshot is still listed"
[[ " $listed " == *" $ID2 "* ]] || fail "deleting $ID1 also unlisted $ID2"
rc=0
"$SNAP" delete "$ID1" 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || fail "deleting a deleted snapshot succeeded"
"$SNAP" restore "$ID2" "$T"/after-delete >/dev/null || fail "restore of the remaining snapshot failed"
assert_same_entries "$T"/src "$T"/after-delete
note "a path that is not UTF-8 names its snapshot with \\xHH; a --name that is not UTF-8 is refused"
odd=$T/$(printf 'odd\xff')
mkdir -p "$odd" && echo bytes >"$odd"/f
ODD=$(store_id "$REPO" "$odd")
"$SNAP" -r "$REPO" list --json | python3 -c '
import json, sys
names = [s["name"] for s in json.load(sys.stdin)]
assert any(n.endswith("odd\\xFF") for n in names), names' || fail "the odd path's snapshot is not listed by its escaped name"
"$SNAP" -r "$REPO" store "$odd" --json >"$T"/odd2.json || fail "a second store of the odd path failed"
assert_eq "$("$SNAP" -r "$REPO" show "$(json_get id <"$T"/odd2.json)" --json | json_get meta.parent)" "$ODD" \
    "parent of the odd path's second snapshot"
expect_exit 64 "$SNAP" -r "$REPO" store "$odd" --name "$(printf 'n\xfe')"
grep -q "UTF-8" "$T"/stderr || fail "the refusal of a non-UTF-8 --name does not say why"

echo "cli ok"
