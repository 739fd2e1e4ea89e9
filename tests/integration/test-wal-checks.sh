#!/usr/bin/env bash
# archive-wal and restore-wal on real WAL files without a running server (initdb's first
# segment, and segments made from it with another number): the page-header check refuses
# misnamed, truncated and foreign files and stores nothing; file names other than segments,
# .partial, .history and .backup are usage errors; the same file archived twice succeeds,
# different bytes under an archived name fail and change nothing; concurrent archivers of
# different segments all succeed; wal-check finds gaps; a damaged pack makes restore-wal fail
# without creating the target; a file that is not archived is exit 1 and silent.
. "$(dirname "$0")/lib.sh"
PGBIN=/usr/lib/postgresql/15/bin
[[ -x $PGBIN/initdb ]] || fail "PostgreSQL 15 is not installed ($PGBIN)"
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"
require runuser od
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
agent() { env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key "$@"; }

# A real PostgreSQL 15 segment: initdb writes 000000010000000000000001.
mkdir "$T"/pgdata && chown postgres: "$T"/pgdata && chmod 755 "$T"
runuser -u postgres -- "$PGBIN"/initdb -k -D "$T"/pgdata >/dev/null 2>&1 || fail "initdb failed"
SEG1=$T/000000010000000000000001
cp "$T"/pgdata/pg_wal/000000010000000000000001 "$SEG1"
assert_eq "$(od -An -tx2 -N2 "$SEG1" | tr -d ' ')" d110 "magic of a PostgreSQL 15 segment"
# make_segment OUT TLI SEGNO [HEADER_TLI]: the real segment with its first page header set for
# segment SEGNO of 16 MiB (xlp_pageaddr) on timeline HEADER_TLI (default TLI), and its body
# changed so that every made segment has bytes of its own.
make_segment() {
    python3 - "$SEG1" "$@" <<'EOF'
import struct, sys
src, out, tli, segno = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
htli = int(sys.argv[5]) if len(sys.argv) > 5 else tli
b = bytearray(open(src, "rb").read())
struct.pack_into("<I", b, 4, htli)
struct.pack_into("<Q", b, 8, segno * 16 * 1024 * 1024)
b[1 << 20: (1 << 20) + 64] = (b"segment %d " % segno) * 4 + bytes(64 - 4 * len(b"segment %d " % segno))
open(out, "wb").write(b)
EOF
}
seg_name() { printf '%08X%08X%08X' "$1" $(($2 / 256)) $(($2 % 256)); }
# What an archive holds: names and bytes of WAL objects and packs.
archive_state() { (cd "$REPO" && find wal packs -type f -printf '%p %s %T@\n' 2>/dev/null | sort); }

note "archive and restore a real segment"
agent --node a archive-wal "$SEG1" 000000010000000000000001 || fail "archive-wal of a real segment failed"
[[ -f $REPO/wal/a/00000001/000000010000000000000001 ]] || fail "no WAL object at wal/a/00000001/"
agent --node a restore-wal 000000010000000000000001 "$T"/restored || fail "restore-wal failed"
cmp "$SEG1" "$T"/restored || fail "restored segment differs"
# restore_command's target is relative to the data directory; the target may already exist.
mkdir -p "$T"/dd/pg_wal
echo old >"$T"/dd/pg_wal/RECOVERYXLOG
(cd "$T"/dd && agent --node a restore-wal 000000010000000000000001 pg_wal/RECOVERYXLOG) ||
    fail "restore-wal to a relative path failed"
cmp "$SEG1" "$T"/dd/pg_wal/RECOVERYXLOG || fail "restore-wal over an existing target"
assert_eq "$(ls "$T"/dd/pg_wal)" RECOVERYXLOG "files beside the restored target"

note "the header check refuses what does not match its name, and stores nothing"
before=$(archive_state)
cp "$SEG1" "$T"/copy
expect_exit 4 agent --node a archive-wal "$T"/copy 000000010000000000000002
grep -q 'does not match its name "000000010000000000000002".*LSN 0/01000000.*LSN 0/02000000' "$T"/stderr ||
    fail "no clear message for a segment archived under another segment's name"
make_segment "$T"/tli2 1 1 2
expect_exit 4 agent --node a archive-wal "$T"/tli2 000000010000000000000001
grep -q 'header is for timeline 2 but the name is for timeline 1' "$T"/stderr ||
    fail "no clear message for a segment of a later timeline"
head -c $((8 << 20)) "$SEG1" >"$T"/short
expect_exit 4 agent --node a archive-wal "$T"/short 000000010000000000000001
grep -q '8388608 bytes but its header says segments are 16777216' "$T"/stderr ||
    fail "no clear message for a truncated segment"
random_file "$T"/noise 16
expect_exit 4 agent --node a archive-wal "$T"/noise 000000010000000000000003
grep -q 'not that of any known PostgreSQL version' "$T"/stderr || fail "no clear message for a file that is not WAL"
: >"$T"/empty
expect_exit 4 agent --node a archive-wal "$T"/empty 000000010000000000000003
for bad in 00000001000000000000000 0000000100000000000000010 000000010000000000000001.tmp \
    00000001000000000000000a 00000000.history 000000000000000000000001 0000000G.history \
    000000010000000000000001.0000002.backup RECOVERYXLOG; do
    expect_exit 64 agent --node a archive-wal "$SEG1" "$bad"
    grep -q "\"$bad\" is not the name of a WAL" "$T"/stderr || fail "no clear message for the name $bad"
done
expect_exit 64 agent --node ../x archive-wal "$SEG1" 000000010000000000000001
expect_exit 192 agent --node a restore-wal not-a-wal-name "$T"/x
expect_exit 1 agent --node a archive-wal "$T"/does-not-exist 000000010000000000000004
expect_exit 64 agent --node a archive-wal "$T" 000000010000000000000004
assert_eq "$(archive_state)" "$before" "archive after refused files"

note "history, backup history and partial files"
printf '1\t0/3000000\tno recovery target specified\n' >"$T"/00000002.history
agent --node a archive-wal "$T"/00000002.history 00000002.history || fail "archive of a history file failed"
[[ -f $REPO/wal/a/history/00000002.history ]] || fail "history file not at wal/a/history/"
printf 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n' >"$T"/b.backup
agent --node a archive-wal "$T"/b.backup 000000010000000000000002.00000028.backup || fail "archive of a .backup file failed"
agent --node a archive-wal "$SEG1" 000000010000000000000001.partial || fail "archive of a .partial segment failed"
expect_exit 4 agent --node a archive-wal "$T"/copy 000000010000000000000005.partial
for f in 00000002.history 000000010000000000000002.00000028.backup 000000010000000000000001.partial; do
    agent --node a restore-wal "$f" "$T"/r-"$f" || fail "restore-wal of $f failed"
done
cmp "$T"/00000002.history "$T"/r-00000002.history || fail "restored history file differs"
cmp "$T"/b.backup "$T"/r-000000010000000000000002.00000028.backup || fail "restored backup file differs"
cmp "$SEG1" "$T"/r-000000010000000000000001.partial || fail "restored partial segment differs"

note "4. the same file twice succeeds; other bytes under an archived name fail"
obj=$REPO/wal/a/00000001/000000010000000000000001
obj_before=$(sha256sum <"$obj")$(stat -c %Y.%s "$obj")
before=$(archive_state)
agent --node a archive-wal "$SEG1" 000000010000000000000001 || fail "archiving the same segment again failed"
assert_eq "$(archive_state)" "$before" "archive after archiving the same bytes again"
cp "$SEG1" "$T"/changed
printf 'X' | dd of="$T"/changed bs=1 seek=$((12 << 20)) conv=notrunc status=none
expect_exit 1 agent --node a archive-wal "$T"/changed 000000010000000000000001
grep -q 'WAL file "000000010000000000000001" is already archived for node "a" with different contents' "$T"/stderr ||
    fail "no clear message for different bytes under an archived name"
assert_eq "$(sha256sum <"$obj")$(stat -c %Y.%s "$obj")" "$obj_before" "WAL object after a refused overwrite"
assert_eq "$(archive_state)" "$before" "archive after a refused overwrite"
agent --node a restore-wal 000000010000000000000001 "$T"/after-refusal || fail "restore after refusal failed"
cmp "$SEG1" "$T"/after-refusal || fail "the archived segment changed after a refused overwrite"
# The same name under another node is another file.
agent --node b archive-wal "$T"/changed 000000010000000000000001 || fail "archive under node b failed"

note "concurrent archivers of different segments, and of the same segment"
pids=()
for n in 2 3 4 5 6 7; do
    make_segment "$T"/c$n 1 $n
    agent --node conc archive-wal "$T"/c$n "$(seg_name 1 $n)" 2>"$T"/c$n.err &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$T"/c?.err; fail "a concurrent archiver failed"; }; done
make_segment "$T"/c8 1 8
pids=()
for n in 1 2 3; do # three archivers of one file: all succeed, one object
    agent --node conc archive-wal "$T"/c8 "$(seg_name 1 8)" 2>"$T"/same$n.err &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$T"/same?.err; fail "a concurrent archiver of one segment failed"; }; done
for n in 2 3 4 5 6 7 8; do
    agent --node conc restore-wal "$(seg_name 1 $n)" "$T"/r$n || fail "restore of segment $n failed"
    cmp "$T"/c$n "$T"/r$n || fail "segment $n restored with other bytes"
done
agent --node conc wal-check --json >"$T"/conc.json || { cat "$T"/conc.json; fail "wal-check of node conc"; }
assert_eq "$(json_get timelines.0.segments <"$T"/conc.json)" 7 "segments of node conc"

note "wal-check finds gaps"
for n in 1 2 3 5 6 9; do
    make_segment "$T"/g$n 1 $n
    agent --node gaps archive-wal "$T"/g$n "$(seg_name 1 $n)" || fail "archive of gap segment $n failed"
done
make_segment "$T"/g2-2 2 16
agent --node gaps archive-wal "$T"/g2-2 "$(seg_name 2 16)" || fail "archive on timeline 2 failed"
expect_exit 1 agent --node gaps wal-check
grep -q 'missing 000000010000000000000004$' <(agent --node gaps wal-check) || fail "wal-check does not name segment 4"
grep -q 'missing 000000010000000000000007 .. 000000010000000000000008 (2 segments)' <(agent --node gaps wal-check) ||
    fail "wal-check does not name segments 7 and 8"
rc=0
agent --node gaps wal-check --json >"$T"/gaps.json || rc=$?
assert_eq "$rc" 1 "exit status of wal-check --json with gaps"
python3 - "$T"/gaps.json <<'EOF' || fail "wal-check --json report is wrong"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is False and r["missing_count"] == 3, r
t1, t2 = r["timelines"]
assert t1["timeline"] == 1 and t1["first"] == "000000010000000000000001" and t1["last"] == "000000010000000000000009", t1
assert t1["missing"] == ["000000010000000000000004", "000000010000000000000007", "000000010000000000000008"], t1
assert t1["segments"] == 6 and t1["segment_size"] == 16777216, t1
assert t2["timeline"] == 2 and t2["missing"] == [] and t2["segments"] == 1, t2
EOF
expect_exit 1 agent --node nobody wal-check
grep -q 'no WAL is archived for node "nobody"' "$T"/stderr || fail "wal-check of an unknown node"

note "3. a damaged pack: restore-wal fails and leaves no file"
R2=$T/repo2
init_repo "$R2"
"$SNAP" -r "$R2" key export "$T"/repo2.key >/dev/null 2>&1
a2() { env -u PITR_PASSPHRASE "$AGENT" -r "$R2" --key-file "$T"/repo2.key --node t "$@"; }
a2 archive-wal "$SEG1" 000000010000000000000001 || fail "archive into repo2 failed"
pack=$(find "$R2"/packs -name '*.pack' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
flip_byte "$pack" $(($(stat -c %s "$pack") / 2)) 64
mkdir "$T"/tgt
expect_exit 132 a2 restore-wal 000000010000000000000001 "$T"/tgt/RECOVERYXLOG
grep -q 'damaged' "$T"/stderr || fail "restore-wal does not say the data is damaged"
assert_eq "$(ls -A "$T"/tgt)" "" "files left after a failed restore"

note "keys"
expect_exit 130 env PITR_PASSPHRASE=wrong "$AGENT" -r "$REPO" --node a restore-wal 000000010000000000000001 "$T"/k
"$AGENT" -r "$REPO" --node a restore-wal 000000010000000000000001 "$T"/k || fail "the passphrase does not unlock"
expect_exit 2 env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo2.key --node a archive-wal "$SEG1" 000000010000000000000001
expect_exit 3 agent -r "$T"/nowhere --node a archive-wal "$SEG1" 000000010000000000000001

note "5. not archived: exit 1, silent"
expect_exit 1 agent --node a restore-wal 000000010000000000000009 "$T"/none
[[ ! -s $T/stderr && ! -e $T/none ]] || fail "restore-wal of a missing segment said something or made a file"
expect_exit 1 env -u PITR_PASSPHRASE PITR_NODE=a "$AGENT" -r "$REPO" --key-file "$T"/repo.key restore-wal 00000005.history "$T"/none
[[ ! -s $T/stderr ]] || fail "restore-wal of a missing history file said something"
echo "all checks passed"
