#!/usr/bin/env bash
# Passphrases and key files: a wrong key is refused with exit 2 and changes nothing; the ways
# to give a key (environment, --passphrase-file, also from a pipe or FIFO, --key-file) all
# unlock; key export is 0600 and
# never overwrites; init refuses an existing repository.
. "$(dirname "$0")/lib.sh"
require setsid env stat
REPO=$T/repo
init_repo "$REPO"
mkdir -p "$T"/src/d
random_file "$T"/src/d/data 2
echo hello >"$T"/src/hello
ID=$(store_id "$REPO" "$T"/src --name first)
echo stream | "$SNAP" -r "$REPO" store --stdin --name s >/dev/null || fail "store --stdin failed"
"$SNAP" -r "$REPO" list >/dev/null || fail "list failed"

# Everything in the repository: every entry with its type, size, mode and mtime, and the bytes
# of every file. No exclusion is needed: the key is checked right after reading config and
# keys/passphrase, before the index (index/*.mdb) is opened or a lock file (locks/) is taken,
# so a refused key must leave even those untouched. Directory mtimes are included, so even a
# file created and removed again (a spool in tmp/) would show.
snapshot_repo() {
    (cd "$REPO" && find . -printf '%p %y %s %m %T@\n' | sort) >"$1"
    repo_digest "$REPO" >>"$1"
}

note "wrong passphrase"
snapshot_repo "$T"/before
for cmd in list info "show $ID" "restore $ID $T/wrong-out" "cat s" "store $T/src" \
    "key export $T/wrong.key" "delete $ID"; do
    # shellcheck disable=SC2086
    PITR_PASSPHRASE="not the passphrase" expect_exit 2 "$SNAP" -r "$REPO" $cmd
    grep -qi passphrase "$T"/stderr || fail "'$cmd' with a wrong passphrase: message does not mention the passphrase"
done
echo "not the passphrase either" >"$T"/wrong-pass
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file "$T"/wrong-pass list
grep -qi passphrase "$T"/stderr || fail "wrong --passphrase-file: message does not mention the passphrase"
# No passphrase at all and no terminal to ask on.
expect_exit 2 env -u PITR_PASSPHRASE setsid -w "$SNAP" -r "$REPO" list </dev/null
grep -qi passphrase "$T"/stderr || fail "no passphrase: message does not mention the passphrase"
[[ ! -e $T/wrong-out && ! -e $T/wrong.key ]] || fail "a refused command created its output"
snapshot_repo "$T"/after
diff "$T"/before "$T"/after || fail "the repository changed after commands with a wrong passphrase"
"$SNAP" -r "$REPO" show "$ID" >/dev/null || fail "snapshot $ID is gone after wrong-passphrase commands"

note "--passphrase-file"
printf '%s\n' "$PITR_PASSPHRASE" >"$T"/pass
env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file "$T"/pass list >"$T"/list.out ||
    fail "--passphrase-file did not unlock"
grep -q first "$T"/list.out || fail "list with --passphrase-file does not show the snapshot"
# The file wins over the environment.
PITR_PASSPHRASE=wrong "$SNAP" -r "$REPO" --passphrase-file "$T"/pass list >/dev/null ||
    fail "--passphrase-file should be used before PITR_PASSPHRASE"

note "--passphrase-file from a pipe: a process substitution, <(...)"
# A pipe has no size: the passphrase is what the pipe carries, read to its end.
AGENT="$PITR_BIN/pitr-agent"
env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file <(printf '%s\n' "$PITR_PASSPHRASE") \
    list >"$T"/list.out 2>"$T"/stderr || { cat "$T"/stderr; fail "--passphrase-file <(...) did not unlock pitr-snap"; }
grep -q first "$T"/list.out || fail "list with --passphrase-file <(...) does not show the snapshot"
# restore-wal of a file never archived: 1 once unlocked, 130 (128 + 2) when the key is refused.
expect_exit 1 env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" -n keys --passphrase-file <(printf '%s' "$PITR_PASSPHRASE") \
    restore-wal 000000010000000000000001 "$T"/wal-out
expect_exit 130 env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" -n keys --passphrase-file <(printf wrong) \
    restore-wal 000000010000000000000001 "$T"/wal-out
mkfifo "$T"/pass.fifo
printf '%s\n' "$PITR_PASSPHRASE" >"$T"/pass.fifo &
env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file "$T"/pass.fifo list >/dev/null ||
    fail "--passphrase-file of a FIFO did not unlock"
wait
# Still bounded: more than 4096 bytes from a pipe is refused as from a file, and an empty pipe
# is an empty passphrase.
expect_exit 1 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file <(head -c 5000 /dev/zero | tr '\0' x) list
grep -q "File too large" "$T"/stderr || fail "a passphrase pipe over 4096 bytes: no clear message"
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --passphrase-file <(true) list
grep -q "the passphrase is empty" "$T"/stderr || fail "an empty passphrase pipe: no clear message"
PITR_PASSPHRASE="not the passphrase" expect_exit 2 "$SNAP" -r "$REPO" --passphrase-file <(echo wrong) list

note "key export"
"$SNAP" -r "$REPO" key export "$T"/repo.key || fail "key export failed"
[[ -f $T/repo.key ]] || fail "key export did not create the file"
assert_eq "$(stat -c %a "$T"/repo.key)" 600 "mode of the exported key file"
(umask 000 && "$SNAP" -r "$REPO" key export "$T"/repo2.key) || fail "key export under umask 000 failed"
assert_eq "$(stat -c %a "$T"/repo2.key)" 600 "mode of a key file exported under umask 000"

note "export to an existing path"
echo "precious" >"$T"/existing
chmod 0644 "$T"/existing
rc=0
"$SNAP" -r "$REPO" key export "$T"/existing 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "key export over an existing file succeeded"
assert_eq "$(cat "$T"/existing)" precious "content of the file key export must not overwrite"
assert_eq "$(stat -c %a "$T"/existing)" 644 "mode of the file key export must not overwrite"
ln -s "$T"/existing "$T"/existing-link
rc=0
"$SNAP" -r "$REPO" key export "$T"/existing-link 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || fail "key export through a symlink to an existing file succeeded"
assert_eq "$(cat "$T"/existing)" precious "content behind a symlink key export must not overwrite"

note "--key-file unlocks"
(
    unset PITR_PASSPHRASE
    "$SNAP" -r "$REPO" --key-file "$T"/repo.key list >/dev/null || fail "--key-file did not unlock list"
    out=$("$SNAP" -r "$REPO" --key-file "$T"/repo.key store "$T"/src --name by-key --json) ||
        fail "store with --key-file failed"
    id=$(json_get id <<<"$out")
    "$SNAP" -r "$REPO" --key-file "$T"/repo.key restore "$id" "$T"/by-key ||
        fail "restore with --key-file failed"
    assert_same_entries "$T"/src "$T"/by-key
    "$SNAP" -r "$REPO" --key-file "$T"/repo.key restore "$ID" "$T"/by-key-old ||
        fail "restore of a passphrase-era snapshot with --key-file failed"
    assert_same_entries "$T"/src "$T"/by-key-old
    [[ $("$SNAP" -r "$REPO" --key-file "$T"/repo.key cat s) == stream ]] || fail "cat with --key-file"
    [[ $(PITR_KEY_FILE="$T"/repo.key "$SNAP" -r "$REPO" cat s) == stream ]] ||
        fail "PITR_KEY_FILE did not unlock"
    PITR_KEY_FILE="$T"/garbage-missing "$SNAP" -r "$REPO" list >/dev/null 2>&1 &&
        fail "a PITR_KEY_FILE that does not exist unlocked the repository"
    true
)

note "a key file of another repository"
init_repo "$T"/other
"$SNAP" -r "$T"/other key export "$T"/other.key || fail "key export of the other repository failed"
snapshot_repo "$T"/before
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --key-file "$T"/other.key list
grep -qiE 'another repository|key' "$T"/stderr || fail "foreign key file: message does not mention the key"
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --key-file "$T"/other.key store "$T"/src

note "a garbage key file"
head -c 300 /dev/urandom >"$T"/garbage.key
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --key-file "$T"/garbage.key list
grep -qi key "$T"/stderr || fail "garbage key file: message does not mention the key"
# Right header and repository id, wrong key material.
python3 - "$T"/repo.key "$T"/forged.key <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
out = []
for l in lines:
    if l.startswith("master"):
        k, v = l.split("=", 1)
        v = v.strip()
        v = ("0" if v[0] != "0" else "1") + v[1:]
        l = f"{k.strip()} = {v}"
    out.append(l)
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
cmp -s "$T"/repo.key "$T"/forged.key && fail "sanity: forged key equals the real one"
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --key-file "$T"/forged.key list
expect_exit 2 env -u PITR_PASSPHRASE "$SNAP" -r "$REPO" --key-file "$T"/forged.key cat s
snapshot_repo "$T"/after
diff "$T"/before "$T"/after || fail "the repository changed after refused key files"

note "init on an existing repository"
snapshot_repo "$T"/before
rc=0
"$SNAP" -r "$REPO" init --scrypt-n 1024 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "init over an existing repository succeeded"
grep -qi 'exists' "$T"/stderr || fail "init over a repository: message does not say it exists"
PITR_PASSPHRASE="a different one" "$SNAP" -r "$REPO" init --scrypt-n 1024 2>/dev/null &&
    fail "init with another passphrase over an existing repository succeeded"
snapshot_repo "$T"/after
diff "$T"/before "$T"/after || fail "init on an existing repository changed it"
"$SNAP" -r "$REPO" restore "$ID" "$T"/final || fail "restore after the refused init failed"
assert_same_entries "$T"/src "$T"/final
note "scrypt parameters a key object may not ask for: damage (exit 4) at once, before any work"
for params in "4194304 32 16" "1048576 32 16" "1000 8 1" "0 8 1" "1 8 1" "1024 0 1" "1024 8 0" \
    "1024 33 1" "1024 8 17"; do
    read -r n r p <<<"$params"
    cp -a "$REPO" "$T"/kdf
    sed -i -e "s/^scrypt_n = .*/scrypt_n = $n/" -e "s/^scrypt_r = .*/scrypt_r = $r/" \
        -e "s/^scrypt_p = .*/scrypt_p = $p/" "$T"/kdf/keys/passphrase
    rc=0
    timeout 20 "$SNAP" -r "$T"/kdf list >/dev/null 2>"$T"/kdf.err || rc=$?
    [[ $rc -eq 4 ]] || fail "list with scrypt N=$n r=$r p=$p exited $rc, expected 4: $(cat "$T"/kdf.err)"
    rm -rf "$T"/kdf
done

echo "keys ok"
