#!/usr/bin/env bash
# Files that are not what a reader expects, where a reader would block or die:
#  1. a FIFO in place of each kind of repository object (config, keys/passphrase, a snapshot
#     record, the packs, a WAL object): list, show, restore, restore-wal, wal-check and the
#     mount fail with the damage exit code (4; restore-wal 132) within seconds, and name it;
#     a FIFO snapshot record is listed as a damaged record;
#  2. archive-wal of a FIFO or a directory: refused as not a regular file (exit 64) at once;
#  3. archive-wal of a segment that is truncated while it is archived, many times over: never
#     killed by a signal (an exit status of 128 or more), and what it archived is the whole
#     segment.
# Every command runs under `timeout`, so a reader that blocks fails the test instead of the
# suite.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint mkfifo truncate timeout
PGBIN=/usr/lib/postgresql/15/bin
[[ -x $PGBIN/initdb ]] || fail "PostgreSQL 15 is not installed ($PGBIN)"
AGENT=$PITR_BIN/pitr-agent
MOUNT=$PITR_BIN/mount.pitrfs
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"

REPO=$T/repo
R=$T/r # the copy each case damages
MNT=$T/mnt
mkdir -p "$MNT"
cleanup_hooks+=('mountpoint -q "$MNT" && { fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"; }')
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
# (an array, not a function: `timeout` runs it)
agent=(env -u PITR_PASSPHRASE "$AGENT" --key-file "$T"/repo.key -n main)

# A real PostgreSQL 15 segment: initdb writes 000000010000000000000001.
SEG=000000010000000000000001
mkdir "$T"/pgdata && chown postgres: "$T"/pgdata && chmod 755 "$T"
runuser -u postgres -- "$PGBIN"/initdb -k -D "$T"/pgdata >/dev/null 2>&1 || fail "initdb failed"
cp "$T"/pgdata/pg_wal/$SEG "$T"/$SEG
"${agent[@]}" -r "$REPO" archive-wal "$T"/$SEG $SEG || fail "archive-wal of initdb's segment failed"
mkdir -p "$T"/src/sub
random_file "$T"/src/sub/data 1
echo "a small file" >"$T"/src/text
ID=$(store_id "$REPO" "$T"/src --name tree)

# within WANT COMMAND...: COMMAND exits WANT, and within 20 s; stderr is kept in $T/stderr.
within() {
    local want=$1 rc=0
    shift
    timeout -k 5 20 "$@" >"$T"/stdout 2>"$T"/stderr || rc=$?
    cat "$T"/stderr >&2
    [[ $rc -ne 124 && $rc -ne 137 ]] || fail "'$*' still ran after 20 s: blocked on a FIFO?"
    [[ $rc -eq $want ]] || fail "expected exit $want from '$*', got $rc"
}
# fifo_in_place OBJECT...: $R is a copy of the repository with a FIFO in place of each OBJECT.
fifo_in_place() {
    local o
    rm -rf "$R"
    cp -a "$REPO" "$R"
    for o in "$@"; do
        [[ -f $R/$o ]] || fail "no object $o to replace"
        rm "$R/$o"
        mkfifo "$R/$o"
    done
}
said() { grep -q "$1" "$T"/stderr || fail "no message saying \"$1\""; }
mount_r() { within 0 "$MOUNT" "$R" "$MNT" -o logfile="$T"/fuse.log; }
umount_r() { fusermount3 -u "$MNT" || fail "could not unmount $MNT"; }
# read_fails PATH: reading PATH through the mount fails with EIO, within 20 s.
read_fails() {
    timeout -k 5 20 python3 - "$1" <<'PY' || fail "reading $1 through the mount did not fail with EIO in time"
import errno, sys
try:
    open(sys.argv[1], "rb").read()
except OSError as e:
    print(f"{sys.argv[1]}: {e}")
    sys.exit(0 if e.errno == errno.EIO else 1)
print(f"{sys.argv[1]}: read without an error")
sys.exit(1)
PY
}

note "1. a FIFO in place of a repository object"
note "config"
fifo_in_place config
within 4 "$SNAP" -r "$R" list
said '"config" of repository ".*" is a FIFO, not a regular file'
within 4 "$SNAP" -r "$R" show "$ID"
within 4 "$SNAP" -r "$R" restore "$ID" "$T"/out-config
within 132 "${agent[@]}" -r "$R" restore-wal $SEG "$T"/wal-out
[[ -e $T/wal-out ]] && fail "restore-wal created its target"
within 4 "$MOUNT" "$R" "$MNT" -o logfile="$T"/fuse.log
mountpoint -q "$MNT" && fail "mount.pitrfs mounted a repository whose config is a FIFO"

note "keys/passphrase"
fifo_in_place keys/passphrase
within 4 "$SNAP" -r "$R" list
said '"keys/passphrase" of repository ".*" is a FIFO'
within 4 "$SNAP" -r "$R" restore "$ID" "$T"/out-keys
within 4 "$MOUNT" "$R" "$MNT" -o logfile="$T"/fuse.log
# (restore-wal unlocks with the key file and never reads keys/passphrase)
within 0 "${agent[@]}" -r "$R" restore-wal $SEG "$T"/wal-out
cmp "$T"/wal-out "$T"/$SEG || fail "restore-wal restored other bytes"
rm "$T"/wal-out

note "the snapshot record: a damaged record"
fifo_in_place "snapshots/$ID"
within 4 "$SNAP" -r "$R" list
said "\"snapshots/$ID\" of repository \".*\" is a FIFO"
grep -q "record \"snapshots/$ID\" is damaged" "$T"/stdout || fail "list does not show the record as damaged"
within 4 "$SNAP" -r "$R" show "$ID"
within 4 "$SNAP" -r "$R" show tree
within 4 "$SNAP" -r "$R" restore "$ID" "$T"/out-snap
within 4 "$MOUNT" "$R" "$MNT" -o logfile="$T"/fuse.log
mountpoint -q "$MNT" && fail "mount.pitrfs mounted a repository whose snapshot record is a FIFO"

note "the packs"
fifo_in_place $(cd "$REPO" && find packs -type f -name '*.pack')
within 4 "$SNAP" -r "$R" restore "$ID" "$T"/out-packs
said '"packs/.*" of repository ".*" is a FIFO, not a regular file'
within 132 "${agent[@]}" -r "$R" restore-wal $SEG "$T"/wal-out
[[ -e $T/wal-out ]] && fail "restore-wal created its target"
mount_r
read_fails "$MNT"/wal/main/00000001/$SEG
read_fails "$MNT"/snapshots/tree/text
umount_r
grep -q 'is a FIFO, not a regular file' "$T"/fuse.log || fail "the mount's log does not name the FIFO"

note "a WAL object"
fifo_in_place wal/main/00000001/$SEG
within 132 "${agent[@]}" -r "$R" restore-wal $SEG "$T"/wal-out
said "\"wal/main/00000001/$SEG\" of repository \".*\" is a FIFO"
said "WAL object \"wal/main/00000001/$SEG\" is damaged"
[[ -e $T/wal-out ]] && fail "restore-wal created its target"
within 4 "${agent[@]}" -r "$R" wal-check
grep -q "damaged: WAL object \"wal/main/00000001/$SEG\"" "$T"/stdout || fail "wal-check does not report the WAL object as damaged"
mount_r
read_fails "$MNT"/wal/main/00000001/$SEG
umount_r

note "2. archive-wal of what is not a regular file"
mkfifo "$T"/fifo-seg
within 64 "${agent[@]}" -r "$REPO" archive-wal "$T"/fifo-seg 000000010000000000000002
said 'WAL file ".*fifo-seg" is not a regular file'
mkdir "$T"/dir-seg
within 64 "${agent[@]}" -r "$REPO" archive-wal "$T"/dir-seg 000000010000000000000002
said 'WAL file ".*dir-seg" is not a regular file'
[[ -e $REPO/wal/main/00000001/000000010000000000000002 ]] && fail "something was archived"

note "3. archive-wal of a segment truncated while it is read, 40 times"
TREPO=$T/trepo
init_repo "$TREPO"
"$SNAP" -r "$TREPO" key export "$T"/trepo.key >/dev/null 2>&1 || fail "key export failed"
mkdir "$T"/trunc
declare -A outcomes=()
for ((i = 0; i < 40; i++)); do
    cp "$T"/$SEG "$T"/trunc/$SEG
    delay=$(printf '0.%03d' $((i * 3 % 60)))     # 0 to 57 ms into the archiving
    sizes=(0 8192 1048576)
    rc=0
    timeout -k 5 60 env -u PITR_PASSPHRASE "$AGENT" -r "$TREPO" --key-file "$T"/trepo.key -n t \
        archive-wal "$T"/trunc/$SEG $SEG 2>"$T"/trunc.err &
    pid=$!
    sleep "$delay"
    truncate -s "${sizes[i % 3]}" "$T"/trunc/$SEG
    wait "$pid" || rc=$?
    outcomes[$rc]=$((${outcomes[$rc]:-0} + 1))
    if ((rc >= 128)); then
        cat "$T"/trunc.err >&2
        fail "try $i (truncated to ${sizes[i % 3]} bytes after $delay s): archive-wal exited $rc, killed by a signal or stopped"
    fi
    [[ $rc -eq 0 || $rc -eq 4 ]] || { cat "$T"/trunc.err >&2; fail "try $i: archive-wal exited $rc, expected 0 or 4"; }
    [[ $rc -eq 4 ]] && ! grep -qE 'changed while it was read|does not match its name' "$T"/trunc.err &&
        { cat "$T"/trunc.err >&2; fail "try $i: exit 4 without saying the file changed"; }
done
for rc in "${!outcomes[@]}"; do echo "exit $rc: ${outcomes[$rc]} times"; done
# Whatever was archived is the whole segment, not a torn read.
if [[ -n ${outcomes[0]:-} ]]; then
    env -u PITR_PASSPHRASE "$AGENT" -r "$TREPO" --key-file "$T"/trepo.key -n t \
        restore-wal $SEG "$T"/trunc-back || fail "restore-wal of the archived segment failed"
    cmp "$T"/trunc-back "$T"/$SEG || fail "the archived segment is not the one that was truncated"
fi
echo "all hostile-file checks done"
