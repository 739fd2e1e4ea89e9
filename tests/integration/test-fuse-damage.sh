#!/usr/bin/env bash
# A damaged pack under a mount: reading the file whose chunks are in it fails with EIO (never
# with wrong bytes, every time), the log names the chunk, the pack and the file, and everything
# else reads fine. The mount runs in the background (the default) with -o logfile.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint
MOUNT="$PITR_BIN/mount.pitrfs"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"

REPO=$T/repo
MNT=$T/mnt
LOG=$T/fuse.log
mkdir -p "$MNT"
cleanup_hooks+=('mountpoint -q "$MNT" && { fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"; }')
packs() { (cd "$REPO" && find packs -type f -name '*.pack' | sort); }
init_repo "$REPO"

note "a good tree, a stream, and a tree whose file is alone in its own pack"
mkdir -p "$T"/good/sub "$T"/bad
random_file "$T"/good/sub/data 3
seq 1 100000 >"$T"/good/text
random_file "$T"/stream 2
ID_GOOD=$(store_id "$REPO" "$T"/good --name good)
ID_S=$(store_id "$REPO" --stdin --name s <"$T"/stream)
random_file "$T"/bad/victim 4
echo "small and fine" >"$T"/bad/neighbour # tiny: its chunk may share a record with the tree
packs >"$T"/packs-before
ID_BAD=$(store_id "$REPO" "$T"/bad --name bad)
comm -13 "$T"/packs-before <(packs) >"$T"/packs-bad
[[ $(wc -l <"$T"/packs-bad) -eq 1 ]] || fail "expected the bad tree in one new pack: $(cat "$T"/packs-bad)"
PACK=$(cat "$T"/packs-bad)
pack_base=$(basename "$PACK" .pack)

note "flip one byte a third into $PACK (victim's data; directory objects come last)"
flip_byte "$REPO/$PACK" $(($(stat -c %s "$REPO/$PACK") / 3)) 16

"$MOUNT" "$REPO" "$MNT" -o logfile="$LOG" || fail "mount.pitrfs in the background failed"
mountpoint -q "$MNT" || fail "mount.pitrfs returned 0 but nothing is mounted"

note "the damaged file fails with EIO, twice, never with wrong bytes"
ls -l "$MNT"/snapshots/bad/ || fail "listing the bad tree failed (its directory object is intact)"
python3 - "$T"/bad/victim "$MNT"/snapshots/bad/victim <<'PY' || fail "reading the damaged file did not fail as it should"
import errno, sys
want = open(sys.argv[1], "rb").read()
for attempt in (1, 2):
    got = bytearray()
    try:
        with open(sys.argv[2], "rb", buffering=0) as f:
            while True:
                b = f.read(128 * 1024)
                if not b:
                    break
                got += b
        print(f"attempt {attempt}: read {len(got)} bytes without an error"); sys.exit(1)
    except OSError as e:
        if e.errno != errno.EIO:
            print(f"attempt {attempt}: {e}, wanted EIO"); sys.exit(1)
    if not want.startswith(bytes(got)):
        print(f"attempt {attempt}: the {len(got)} bytes before the error are not the file's"); sys.exit(1)
    print(f"attempt {attempt}: EIO after {len(got)} good bytes of {len(want)}")
PY
rc=0
cat "$MNT"/snapshots/bad/victim >/dev/null 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "cat of the damaged file succeeded"
grep -q "Input/output error" "$T"/stderr || fail "cat did not report an I/O error"

note "everything else reads"
cmp "$T"/good/sub/data "$MNT"/snapshots/good/sub/data || fail "a file of an intact pack differs"
cmp "$T"/good/text "$MNT"/snapshots/"$ID_GOOD"/text || fail "a file of an intact pack differs"
cmp "$T"/stream "$MNT"/streams/s || fail "the stream differs"
cmp "$T"/stream "$MNT"/streams/"$ID_S" || fail "the stream differs"

note "the log names the chunk, the pack and the file"
# The daemon's log goes through a thread: wait for the line of the failed read.
wait_until 10 grep -q "snapshots/$ID_BAD/victim" "$LOG" || true # the checks below say what is missing
cat "$LOG"
grep -Eq '[0-9a-f]{64}' "$LOG" || fail "the log does not name the chunk (64 hex digits)"
grep -q "$pack_base" "$LOG" || fail "the log does not name the pack $pack_base"
grep -qi damaged "$LOG" || fail "the log does not say the data is damaged"
grep -q "snapshots/$ID_BAD/victim" "$LOG" || fail "the log does not name the file"

timeout 10 fusermount3 -u "$MNT" || fail "unmount failed"
for i in $(seq 50); do grep -q unmounted "$LOG" && break; sleep 0.1; done
grep -q unmounted "$LOG" || fail "the daemon did not log its unmount"
echo "ok"
