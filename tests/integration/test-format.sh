#!/usr/bin/env bash
# What is not a repository, a repository of a newer format, a damaged config, and a catalog
# with a snapshot object missing or damaged.
. "$(dirname "$0")/lib.sh"

note "an empty directory"
mkdir "$T"/empty
expect_exit 3 "$SNAP" -r "$T"/empty list
grep -q "not a pitrfs repository" "$T"/stderr || fail "empty directory: message does not say 'not a pitrfs repository'"
[[ -z $(ls -A "$T"/empty) ]] || fail "list created files in an empty directory: $(ls -A "$T"/empty)"
expect_exit 3 "$SNAP" -r "$T"/empty store "$T"/empty
[[ -z $(ls -A "$T"/empty) ]] || fail "a refused store created files in an empty directory: $(ls -A "$T"/empty)"

note "/etc"
etc_before=$(ls -A /etc | sha256sum)
expect_exit 3 "$SNAP" -r /etc list
grep -q "not a pitrfs repository" "$T"/stderr || fail "/etc: message does not say 'not a pitrfs repository'"
expect_exit 3 "$SNAP" -r /etc info
assert_eq "$(ls -A /etc | sha256sum)" "$etc_before" "entries of /etc after list/info on it"

note "a path that does not exist"
rc=0
"$SNAP" -r "$T"/nothing-here list 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "list of a missing directory succeeded"
grep -q "nothing-here" "$T"/stderr || fail "the error for a missing directory does not name it"
[[ ! -e $T/nothing-here ]] || fail "list created the missing repository directory"

REPO=$T/repo
init_repo "$REPO"
mkdir -p "$T"/src
random_file "$T"/src/f 1
ID1=$(store_id "$REPO" "$T"/src --name one)
ID2=$(store_id "$REPO" "$T"/src --name two)
ID3=$(store_id "$REPO" "$T"/src --name three)
grep -qx 'format_version = 5' "$REPO"/config || fail "config has no 'format_version = 5' line"
cp "$REPO"/config "$T"/config.good

note "format_version = 6"
sed -i 's/^format_version = 5$/format_version = 6/' "$REPO"/config
grep -qx 'format_version = 6' "$REPO"/config || fail "sanity: sed did not change the version"
for cmd in list info "show $ID1" "store $T/src"; do
    # shellcheck disable=SC2086
    expect_exit 3 "$SNAP" -r "$REPO" $cmd
    grep -q newer "$T"/stderr || fail "'$cmd' on format 6: message does not contain 'newer'"
done
ls "$REPO"/snapshots | wc -l | grep -qx 3 || fail "a refused store on a newer format added a snapshot"
cp "$T"/config.good "$REPO"/config

note "config full of garbage"
head -c 2000 /dev/urandom >"$REPO"/config
expect_exit 3 "$SNAP" -r "$REPO" list
grep -q "not a pitrfs repository" "$T"/stderr || fail "garbage config: message is not 'not a pitrfs repository'"

note "config with the right header and a garbage body"
{ echo "pitrfs repository"; head -c 2000 /dev/urandom | base64; } >"$REPO"/config
expect_exit 4 "$SNAP" -r "$REPO" list
grep -q "config" "$T"/stderr && grep -q "damaged" "$T"/stderr ||
    fail "damaged config: message does not say the config is damaged"

note "config cut short"
head -n 4 "$T"/config.good >"$REPO"/config
expect_exit 4 "$SNAP" -r "$REPO" list
grep -q "config" "$T"/stderr && grep -q "damaged" "$T"/stderr ||
    fail "truncated config: message does not say the config is damaged"

note "config with a tampered key check"
sed 's/^key_check = \(.\)/key_check = f\1/; s/^key_check = ff/key_check = 0f/' "$T"/config.good |
    awk '/^key_check/ {print substr($0, 1, length($0) - 1)} !/^key_check/' >"$REPO"/config
cmp -s "$REPO"/config "$T"/config.good && fail "sanity: config not modified"
rc=0
"$SNAP" -r "$REPO" list 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "list succeeded with a tampered key_check"
cp "$T"/config.good "$REPO"/config
"$SNAP" -r "$REPO" list >/dev/null || fail "list with the original config restored failed"

note "a deleted snapshot object"
rm "$REPO"/snapshots/"$ID2"
"$SNAP" -r "$REPO" list --json >"$T"/list.json || fail "list with a snapshot object deleted failed"
listed=$(python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(open(sys.argv[1]))))' "$T"/list.json)
[[ " $listed " == *" $ID1 "* && " $listed " == *" $ID3 "* ]] ||
    fail "list does not show the remaining snapshots"
[[ " $listed " == *" $ID2 "* ]] && fail "list shows the deleted snapshot"
"$SNAP" -r "$REPO" restore "$ID3" "$T"/r3 || fail "restore of a remaining snapshot failed"
assert_same_entries "$T"/src "$T"/r3
rc=0
"$SNAP" -r "$REPO" show "$ID2" 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] || fail "show of a deleted snapshot succeeded"
grep -q "$ID2" "$T"/stderr || fail "show of a deleted snapshot: message does not name it"

note "a damaged snapshot object"
python3 - "$REPO"/snapshots/"$ID3" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 1
open(p, "wb").write(bytes(b))
PY
rc=0
"$SNAP" -r "$REPO" list --json >"$T"/list.json 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -eq 4 ]] || fail "list with a damaged snapshot object exited $rc, not 4"
grep -q "\"$ID1\"" "$T"/list.json || fail "a damaged snapshot object hides the others from list"
grep -q "$ID3" "$T"/stderr || fail "list does not report the damaged snapshot object $ID3"
rc=0
"$SNAP" -r "$REPO" restore "$ID3" "$T"/r3b 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || fail "restore of a damaged snapshot object succeeded"
"$SNAP" -r "$REPO" restore "$ID1" "$T"/r1 || fail "restore of an intact snapshot failed"
assert_same_entries "$T"/src "$T"/r1
echo "format ok"
