#!/usr/bin/env bash
# WAL archiving with a real PostgreSQL 15 (data checksums, wal_level=replica, archive_mode=on,
# archive_command = pitr-agent archive-wal with a key file):
#  1. archiving keeps up under pgbench load with pg_switch_wal() calls, and wal-check finds
#     the chain complete;
#  2. a base backup taken with pg_basebackup -X none (so recovery needs the archive) and the
#     archive alone, with the original pg_wal deleted, recover the latest state through
#     restore-wal; a second copy recovers to a named restore point, promotes to a timeline
#     whose first segment starts with pages of the parent timeline, and archives it;
#  3. a WAL file that is not archived makes restore-wal exit 1 without a word;
#  4. a restore-wal that fails mid-recovery (a key that does not unlock) stops recovery:
#     PostgreSQL must not take the failure for the end of the archive and promote early;
#     with the right key a restart then recovers the latest state.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"

REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key
# The agent as PostgreSQL runs it: as postgres, unlocked by the key file only.
agent() { as_pg env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key "$@"; }
AGENT_CMD="$AGENT -r $REPO --key-file $T/repo.key --node main"

P1=$(free_port 21440)
P2=$(free_port $((P1 + 1)))
P3=$(free_port $((P2 + 1)))
P4=$(free_port $((P3 + 1)))
# Wait until the archive holds object $1 (a path below wal/main/), 60 s at most.
wait_archived() {
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -f $REPO/wal/main/$1 ]] && return 0
        sleep 0.1
    done
    fail "wal/main/$1 was not archived within 60 s"
}

PGDATA=$T/pg1
pg_init "$PGDATA" "$P1" "$AGENT_CMD archive-wal %p %f"
pg_start "$PGDATA" "$T"/pg1.log
[[ $(psql_at "$P1" -c "SHOW data_checksums") == on ]] || fail "data checksums are off"

note "1. archiving under pgbench load"
as_pg "$PGBIN"/pgbench -h 127.0.0.1 -p "$P1" -U postgres -i -s 5 -q postgres >"$T"/pgbench-init.log 2>&1 ||
    { cat "$T"/pgbench-init.log; fail "pgbench -i failed"; }
# The base backup for part 2, before the load: everything after it comes from the archive.
as_pg "$PGBIN"/pg_basebackup -h 127.0.0.1 -p "$P1" -U postgres -D "$T"/base -X none -c fast \
    2>"$T"/basebackup.err || { cat "$T"/basebackup.err; fail "pg_basebackup failed"; }
as_pg cp -a "$T"/base "$T"/base2
as_pg cp -a "$T"/base "$T"/base4
t0=$SECONDS
as_pg "$PGBIN"/pgbench -h 127.0.0.1 -p "$P1" -U postgres -c 4 -j 2 -T 10 postgres >"$T"/pgbench.log 2>&1 &
bench=$!
for _ in 1 2 3 4; do
    sleep 2
    psql_at "$P1" -c "SELECT pg_switch_wal()" >/dev/null || fail "pg_switch_wal failed"
done
wait "$bench" || { cat "$T"/pgbench.log; fail "pgbench failed"; }
grep -E '^(number of transactions actually processed|tps)' "$T"/pgbench.log || true
# Part 2's markers: A before the restore point rp1, B after it.
psql_at "$P1" -c "CREATE TABLE marker(v text)" -c "INSERT INTO marker VALUES ('A after backup')" \
    -c "SELECT pg_create_restore_point('rp1')" -c "INSERT INTO marker VALUES ('B after rp1')" >/dev/null
HISTORY_ROWS=$(psql_at "$P1" -c "SELECT count(*) FROM pgbench_history")
LAST=$(psql_at "$P1" -c "SELECT pg_walfile_name(pg_switch_wal())")
wait_archived "00000001/$LAST"
echo "archived up to $LAST, $((SECONDS - t0)) s after the load started"
stats=$(psql_at "$P1" -c "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver")
echo "pg_stat_archiver (archived, failed, last): $stats"
IFS='|' read -r archived failed last_wal <<<"$stats"
assert_eq "$failed" 0 "pg_stat_archiver.failed_count"
[[ $archived -ge 5 ]] || fail "only $archived segments were archived"
[[ -n $last_wal ]] || fail "pg_stat_archiver.last_archived_wal is not set"
grep -q 'archive command failed' "$T"/pg1.log && fail "the server log shows failed archive commands"
agent --node main wal-check --json >"$T"/check.json || { cat "$T"/check.json; fail "wal-check found problems"; }
assert_eq "$(json_get ok <"$T"/check.json)" True "wal-check ok"
assert_eq "$(json_get missing_count <"$T"/check.json)" 0 "wal-check missing_count"
assert_eq "$(json_get timelines.0.first <"$T"/check.json)" 000000010000000000000001 "first archived segment"
assert_eq "$(json_get timelines.0.last <"$T"/check.json)" "$LAST" "last archived segment"
n_archived=$(find "$REPO"/wal/main/00000001 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l)
# pg_basebackup's backup history file went through archive_command too.
[[ $(json_get backup <"$T"/check.json) == *.backup* ]] || fail "wal-check lists no backup history file"
assert_eq "$(json_get timelines.0.segments <"$T"/check.json)" "$n_archived" "segments wal-check counts"
agent --node main wal-check || fail "wal-check (text) failed"

as_pg "$PGBIN"/pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null || fail "could not stop the server"
# The archive is now the only copy of the WAL written since the base backup.
rm -rf "${PGDATA:?}"/pg_wal/*
[[ -z $(ls "$T"/base/pg_wal | grep -v archive_status) ]] || fail "the base backup holds WAL files"

note "2a. recovery of the latest state from the archive only"
cat >>"$T"/base/postgresql.conf <<EOF
port = $P2
restore_command = '$AGENT_CMD restore-wal %f %p'
recovery_target_action = 'promote'
EOF
as_pg touch "$T"/base/recovery.signal
pg_start "$T"/base "$T"/pg2.log
wait_promoted "$P2" "$T"/pg2.log
assert_eq "$(psql_at "$P2" -c "SELECT string_agg(v, ',' ORDER BY v) FROM marker")" \
    "A after backup,B after rp1" "markers after recovery of the latest state"
assert_eq "$(psql_at "$P2" -c "SELECT count(*) FROM pgbench_history")" "$HISTORY_ROWS" \
    "pgbench_history rows after recovery"
restored=$(grep -c 'restored log file "0000000100000000000000.." from archive' "$T"/pg2.log || true)
echo "server 2 restored $restored segments from the archive"
[[ $restored -ge 5 ]] || { tail -30 "$T"/pg2.log; fail "recovery restored only $restored segments"; }
grep -q 'pitr-agent' "$T"/pg2.log && { grep pitr-agent "$T"/pg2.log; fail "restore-wal wrote messages into the server log"; }
assert_eq "$(psql_at "$P2" -c "SELECT timeline_id FROM pg_control_checkpoint()")" 2 "timeline after promotion"
# The promoted server archives its timeline history as node main too.
wait_archived history/00000002.history

note "2b. recovery to restore point rp1, promotion to timeline 3"
cat >>"$T"/base2/postgresql.conf <<EOF
port = $P3
restore_command = '$AGENT_CMD restore-wal %f %p'
recovery_target_name = 'rp1'
recovery_target_action = 'promote'
EOF
as_pg touch "$T"/base2/recovery.signal
pg_start "$T"/base2 "$T"/pg3.log
wait_promoted "$P3" "$T"/pg3.log
assert_eq "$(psql_at "$P3" -c "SELECT string_agg(v, ',' ORDER BY v) FROM marker")" "A after backup" \
    "markers after recovery to rp1"
# PostgreSQL saw 00000002.history through restore-wal and chose the next free timeline.
assert_eq "$(psql_at "$P3" -c "SELECT timeline_id FROM pg_control_checkpoint()")" 3 "timeline of server 3"
wait_archived history/00000003.history
first3=$(psql_at "$P3" -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
psql_at "$P3" -c "SELECT pg_switch_wal()" >/dev/null
wait_archived "00000003/$first3"
# Recovery ended inside a segment, so the new timeline's first segment begins with pages
# copied from timeline 1: its first page header names timeline 1.
hdr_tli=$(od -An -tu4 -j4 -N4 "$T"/base2/pg_wal/"$first3" | tr -d ' ')
echo "first segment of timeline 3: $first3, first page header timeline $hdr_tli"
assert_eq "$hdr_tli" 1 "timeline in the first page header of $first3"
assert_eq "$(psql_at "$P3" -c "SELECT failed_count FROM pg_stat_archiver")" 0 "failed archive commands on server 3"
agent --node main wal-check --json >"$T"/check2.json || { cat "$T"/check2.json; fail "wal-check after the recoveries found problems"; }
python3 - "$T"/check2.json <<'EOF' || fail "wal-check report after the recoveries is wrong"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] and r["missing_count"] == 0, r
assert r["history"] == ["00000002.history", "00000003.history"], r["history"]
assert [t["timeline"] for t in r["timelines"]][0] == 1 and 3 in [t["timeline"] for t in r["timelines"]], r["timelines"]
assert len(r["system_identifiers"]) == 1, r["system_identifiers"]
EOF
agent --node main restore-wal 00000003.history "$T"/h3 || fail "restore-wal of 00000003.history failed"
cmp "$T"/h3 "$T"/base2/pg_wal/00000003.history || fail "restored 00000003.history differs"
agent --node main restore-wal "$first3" "$T"/s3 || fail "restore-wal of $first3 failed"
cmp "$T"/s3 "$T"/base2/pg_wal/"$first3" || fail "restored $first3 differs from the server's"

note "3. a WAL file that is not archived: exit 1, nothing said"
for f in 0000000100000000000000FF 00000009.history 000000010000000000000001.partial; do
    expect_exit 1 agent --node main restore-wal "$f" "$T"/missing-target
    [[ ! -s $T/stderr ]] || fail "restore-wal of missing $f wrote to stderr"
done
expect_exit 1 agent --node nosuchnode restore-wal "$LAST" "$T"/missing-target
[[ ! -s $T/stderr ]] || fail "restore-wal from an unknown node wrote to stderr"
[[ ! -e $T/missing-target ]] || fail "restore-wal of a missing file created the target"
leftover=("$T"/*pitr-*)
[[ ! -e ${leftover[0]} ]] || fail "restore-wal left a temporary file behind: ${leftover[*]}"
# With -v the reason is there.
expect_exit 1 agent --node main -v restore-wal 0000000100000000000000FF "$T"/missing-target
grep -q 'not archived' "$T"/stderr || fail "restore-wal -v does not say the file is not archived"

note "4. restore-wal failing mid-recovery stops recovery; a restart with the key finishes it"
# The segments the base backup needs to become consistent come through; every later one is
# asked for under a wrong passphrase.
start_seg=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\))$/\1/p' "$T"/base4/backup_label)
[[ -n $start_seg ]] || fail "no START WAL LOCATION in the base backup's backup_label"
limit=$(printf '%s%08X' "${start_seg:0:16}" $((16#${start_seg:16:8} + 1)))
cat >"$T"/restore-flaky.sh <<EOF
#!/bin/bash
if [[ \$1 == 00000001???????????????? && \$1 > $limit ]]; then
    exec env PITR_PASSPHRASE=wrong "$AGENT" -r "$REPO" --node main restore-wal "\$1" "\$2"
fi
exec $AGENT_CMD restore-wal "\$1" "\$2"
EOF
chmod 755 "$T"/restore-flaky.sh
cat >>"$T"/base4/postgresql.conf <<EOF
port = $P4
restore_command = '$T/restore-flaky.sh %f %p'
recovery_target_action = 'promote'
# Timeline 1 to its end: the latest timeline (3, from part 2b) branched off before B.
recovery_target_timeline = '1'
EOF
as_pg touch "$T"/base4/recovery.signal
# pg_ctl may return once the copy is consistent and accepts connections: the failure comes
# after that. Wait for the server to end by itself.
as_pg "$PGBIN"/pg_ctl -D "$T"/base4 -l "$T"/pg4.log -w -t 90 start >/dev/null 2>&1 || true
cleanup_hooks+=("as_pg '$PGBIN/pg_ctl' -D '$T/base4' -m immediate stop >/dev/null 2>&1")
for ((i = 0; i < 600; i++)); do
    [[ -e $T/base4/postmaster.pid ]] || break
    sleep 0.1
done
[[ ! -e $T/base4/postmaster.pid ]] || {
    tail -20 "$T"/pg4.log
    fail "the server went on although restore-wal failed (promoted: $(psql_at "$P4" -c "SELECT NOT pg_is_in_recovery()" 2>&1))"
}
grep -q 'could not restore file .* from archive: child process exited with exit code 130' "$T"/pg4.log ||
    { tail -20 "$T"/pg4.log; fail "the server log does not show restore-wal's exit status 130"; }
grep -q 'selected new timeline ID' "$T"/pg4.log && fail "the server promoted after restore-wal failed"
sed -i "s|^restore_command = '$T/restore-flaky.sh %f %p'|restore_command = '$AGENT_CMD restore-wal %f %p'|" "$T"/base4/postgresql.conf
pg_start "$T"/base4 "$T"/pg4b.log
wait_promoted "$P4" "$T"/pg4b.log
assert_eq "$(psql_at "$P4" -c "SELECT string_agg(v, ',' ORDER BY v) FROM marker")" \
    "A after backup,B after rp1" "markers after the interrupted recovery"
assert_eq "$(psql_at "$P4" -c "SELECT count(*) FROM pgbench_history")" "$HISTORY_ROWS" \
    "pgbench_history rows after the interrupted recovery"
echo "all WAL checks passed"
