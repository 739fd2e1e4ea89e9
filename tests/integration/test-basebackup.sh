#!/usr/bin/env bash
# Base backup and restore of one node with a real PostgreSQL 15 (data checksums on, WAL archived
# by pitr-agent):
#  1. a base backup under pgbench load, with a tablespace and an in-place tablespace (a
#     directory in pg_tblspc/, as a copy started from a mounted snapshot has), on top of one
#     made before the load (changed pages are stored as deltas of it); a restore point is made while a
#     session holds a lock that stops writers, and pg_dump runs at that instant;
#  2. restore to that restore point into a new data directory (the tablespace mapped elsewhere),
#     start it on another port: its pg_dump equals the one taken at the restore point;
#  3. a delta restore over that copy after it ran rewrites only what differs, and recovers to
#     the same state again;
#  4. a page damaged on disk is reported by relation file and block (exit 4), the backup is
#     stored and lists it;
#  5. bad input: the node down, a role that does not exist, an unreadable PGDATA, a data
#     directory of another cluster: clear errors, and no base backup appears in the list.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"
require pg_dump

REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key
agent() { as_pg env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n main "$@"; }
list_bases() { "$SNAP" -r "$REPO" list --json | python3 -c '
import json, sys
print(sum(1 for s in json.load(sys.stdin) if s["kind"] == "pgbase"))'; }

P1=$(free_port 21500)
P2=$(free_port $((P1 + 1)))
PGDATA=$T/pg1
pg_init "$PGDATA" "$P1" "$AGENT -q -r $REPO --key-file $T/repo.key -n main archive-wal %p %f"
pg_start "$PGDATA" "$T"/pg1.log
# (pg_dump 15.14 and later guard the script with a random \restrict key: not data.)
dump() { as_pg "$PGBIN"/pg_dump -h 127.0.0.1 -p "$1" -U postgres -d postgres --no-sync | grep -v '^\\\(un\)\?restrict '; }

note "1. base backup under load, with a tablespace"
mkdir "$T"/ts1 && chown postgres: "$T"/ts1
psql_at "$P1" -c "CREATE TABLESPACE ts1 LOCATION '$T/ts1'" \
    -c "CREATE TABLE in_ts (id int primary key, v text) TABLESPACE ts1" \
    -c "INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 20000) g" >/dev/null
# ALTER SYSTEM: the restored copy's recovery needs the setting too (postgresql.auto.conf).
psql_at "$P1" -c "ALTER SYSTEM SET allow_in_place_tablespaces = on" -c "SELECT pg_reload_conf()" \
    -c "SET allow_in_place_tablespaces = on" -c "CREATE TABLESPACE ts_in_place LOCATION ''" \
    -c "CREATE TABLE in_place (id int primary key, v text) TABLESPACE ts_in_place" \
    -c "INSERT INTO in_place SELECT g, md5(g::text) FROM generate_series(1, 5000) g" >/dev/null
IN_PLACE_OID=$(psql_at "$P1" -c "SELECT oid FROM pg_tablespace WHERE spcname = 'ts_in_place'")
as_pg "$PGBIN"/pgbench -h 127.0.0.1 -p "$P1" -U postgres -i -s 10 -q postgres >"$T"/pgbench-init.log 2>&1 ||
    { cat "$T"/pgbench-init.log; fail "pgbench -i failed"; }
# A first backup before the load: the one under load builds on it, storing the pages that
# changed as deltas, and it is that one that is restored and compared below.
agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" --json >"$T"/backup0.json ||
    fail "first base backup failed"
FIRST_ID=$(python3 -c "import json,sys; print(json.load(open('$T/backup0.json'))['id'])")
# runuser itself in the background, not the as_pg function: $! must be a process whose death
# stops pgbench (runuser passes SIGTERM on), not a subshell that would leave pgbench running.
runuser -u postgres -- "$PGBIN"/pgbench -h 127.0.0.1 -p "$P1" -U postgres -c 4 -T 300 -n postgres \
    >"$T"/pgbench.log 2>&1 &
PGBENCH=$!
cleanup_hooks+=("kill $PGBENCH 2>/dev/null")
sleep 2
agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" --json >"$T"/backup.json ||
    fail "base backup under load failed"
cat "$T"/backup.json
jq_get() { python3 -c "import json,sys; print(json.load(open('$T/backup.json'))$1)"; }
BACKUP_ID=$(jq_get '["id"]')
assert_eq "$(jq_get '["parent"]')" "$FIRST_ID" "the backup under load builds on the first"
[[ $(jq_get '["delta_pages"]') -gt 0 ]] || fail "no page of the backup under load was stored as a delta"
assert_eq "$(jq_get '["system_identifier"]')" "$(psql_at "$P1" -c "SELECT system_identifier FROM pg_control_system()")" "system identifier"
assert_eq "$(jq_get '["timeline"]')" 1 "timeline"
assert_eq "$(jq_get '["server_version"]')" "$(psql_at "$P1" -c "SHOW server_version_num")" "server version"
assert_eq "$(jq_get '["checksum_failures_total"]')" 0 "checksum failures"
[[ $(jq_get '["pages_checked"]') -gt 1000 ]] || fail "too few pages verified"
[[ $(jq_get '["start_lsn"]') == */* && $(jq_get '["stop_lsn"]') == */* ]] || fail "LSNs missing"
# The stored tree: excluded contents are absent, backup_label and tablespace_map present.
"$SNAP" -r "$REPO" cat "$BACKUP_ID" pgdata/backup_label >"$T"/label 2>/dev/null ||
    fail "backup_label is not in the base backup"
grep -q "START WAL LOCATION: $(jq_get '["start_lsn"]')" "$T"/label || { cat "$T"/label; fail "backup_label does not match"; }
"$SNAP" -r "$REPO" cat "$BACKUP_ID" pgdata/tablespace_map | grep -q " $T/ts1\$" ||
    fail "tablespace_map does not name the tablespace"
IN_PLACE_REL=$(psql_at "$P1" -c "SELECT pg_relation_filepath('in_place')")
"$SNAP" -r "$REPO" cat "$BACKUP_ID" "pgdata/$IN_PLACE_REL" | cmp -s - "$PGDATA/$IN_PLACE_REL" ||
    fail "the in-place tablespace's table $IN_PLACE_REL is not in pgdata/ of the backup"
assert_eq "$(jq_get '["tablespaces"]')" 1 "tablespaces stored apart (ts1; the in-place one is in pgdata/)"
"$SNAP" -r "$REPO" cat "$BACKUP_ID" pgdata/postmaster.pid >/dev/null 2>&1 &&
    fail "postmaster.pid was backed up"

note "restore point at an instant with writers stopped, and pg_dump at that instant"
# The lock session holds EXCLUSIVE locks (readers go on, writers wait), makes the restore
# point, then sleeps; the dump runs while it sleeps.
as_pg "$PGBIN"/psql -h 127.0.0.1 -p "$P1" -U postgres -d postgres -Xq -v ON_ERROR_STOP=1 \
    -c "BEGIN" \
    -c "LOCK TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, in_ts IN EXCLUSIVE MODE" \
    -c "SELECT pg_create_restore_point('rp1')" -c "SELECT pg_sleep(600)" -c "COMMIT" \
    >"$T"/locker.log 2>&1 &
LOCKER=$!
for ((i = 0; i < 300; i++)); do
    [[ $(psql_at "$P1" -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)' AND state = 'active'") == 1 ]] && break
    sleep 0.1
done
[[ $i -lt 300 ]] || { cat "$T"/locker.log; fail "the lock session did not get its locks"; }
dump "$P1" >"$T"/dump-rp1.sql || fail "pg_dump at the restore point failed"
psql_at "$P1" -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'" >/dev/null
wait $LOCKER 2>/dev/null || true
sleep 2 # more load after the restore point
kill $PGBENCH; wait $PGBENCH 2>/dev/null || true
RP_WAL=$(psql_at "$P1" -c "SELECT pg_walfile_name(pg_switch_wal())")
for ((i = 0; i < 600; i++)); do
    [[ -f $REPO/wal/main/00000001/$RP_WAL ]] && break
    sleep 0.1
done
[[ $i -lt 600 ]] || fail "$RP_WAL was not archived"

note "2. restore to the restore point into a new directory, tablespace mapped elsewhere"
TS_OID=$(psql_at "$P1" -c "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
mkdir "$T"/ts1-copy && chown postgres: "$T"/ts1-copy
# Unlocked by a passphrase, the agent cannot give the server a restore_command (PostgreSQL
# cannot answer a prompt): refused before anything is written.
mkdir "$T"/pg-nokey "$T"/ts1-nokey && chown postgres: "$T"/pg-nokey "$T"/ts1-nokey
expect_exit 64 as_pg "$AGENT" -r "$REPO" -n main restore "$BACKUP_ID" --target-dir "$T"/pg-nokey \
    --target-name rp1 --tablespace-map "$TS_OID=$T/ts1-nokey"
grep -q 'needs a key file' "$T"/stderr || fail "a restore without a key file does not say why it is refused"
[[ -z $(find "$T"/pg-nokey "$T"/ts1-nokey -mindepth 1) ]] || fail "a refused restore wrote into its target"
# The key file may come from the environment, as archive_command's does.
as_pg env -u PITR_PASSPHRASE PITR_KEY_FILE="$T"/repo.key "$AGENT" -r "$REPO" -n main restore \
    "$BACKUP_ID" --target-dir "$T"/pg2 --target-name rp1 --tablespace-map "$TS_OID=$T/ts1-copy" ||
    fail "restore failed"
[[ -f $T/pg2/recovery.signal ]] || fail "recovery.signal missing"
grep -q "recovery_target_name = 'rp1'" "$T"/pg2/postgresql.auto.conf || fail "recovery target missing"
[[ -z $(ls "$T"/pg2/pg_wal | grep -v archive_status) ]] || fail "pg_wal is not empty"
echo "port = $P2" >>"$T"/pg2/postgresql.auto.conf
pg_start "$T"/pg2 "$T"/pg2.log
wait_promoted "$P2" "$T"/pg2.log
grep -q 'recovery stopping at restore point "rp1"' "$T"/pg2.log || { tail "$T"/pg2.log; fail "recovery did not stop at rp1"; }
[[ $(readlink "$T"/pg2/pg_tblspc/"$TS_OID") == "$T/ts1-copy" ]] || fail "pg_tblspc link not remapped"
[[ -d $T/pg2/pg_tblspc/$IN_PLACE_OID && ! -L $T/pg2/pg_tblspc/$IN_PLACE_OID ]] ||
    fail "the in-place tablespace was not restored in place"
dump "$P2" >"$T"/dump-restored.sql
diff "$T"/dump-rp1.sql "$T"/dump-restored.sql >"$T"/dump.diff || { head -20 "$T"/dump.diff; fail "the restored node differs from the restore point"; }
echo "pg_dump at rp1 and of the restored node agree ($(wc -l <"$T"/dump-rp1.sql) lines)"

note "3. delta restore over the copy that ran"
psql_at "$P2" -c "INSERT INTO in_ts VALUES (-1, 'after restore')" -c "CHECKPOINT" >/dev/null
pg_stop "$T"/pg2
agent restore "$BACKUP_ID" --target-dir "$T"/pg2 --target-name rp1 --delta \
    --tablespace-map "$TS_OID=$T/ts1-copy" >"$T"/delta.out || fail "delta restore failed"
cat "$T"/delta.out
unchanged=$(sed -n 's/.* \([0-9]*\) files unchanged.*/\1/p' "$T"/delta.out)
[[ ${unchanged:-0} -gt 100 ]] || fail "delta restore rewrote nearly everything"
echo "port = $P2" >>"$T"/pg2/postgresql.auto.conf
pg_start "$T"/pg2 "$T"/pg2b.log
wait_promoted "$P2" "$T"/pg2b.log
dump "$P2" >"$T"/dump-delta.sql
diff -q "$T"/dump-rp1.sql "$T"/dump-delta.sql || fail "the delta-restored node differs from the restore point"
pg_stop "$T"/pg2
agent restore "$BACKUP_ID" --target-dir "$T"/pg2 --target-name rp1 2>"$T"/err && fail "restore into a non-empty directory worked"
grep -q "not empty" "$T"/err || fail "no clear message for a non-empty target"

note "4. a damaged page is reported by file and block"
# Autovacuum off and everything frozen and checkpointed first: nothing dirties the table's
# buffers again, so no checkpoint writes the good page back over the damage.
psql_at "$P1" -c "CREATE TABLE damaged WITH (autovacuum_enabled = off) AS
                      SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 2000) g" \
    -c "VACUUM (FREEZE) damaged" -c "CHECKPOINT" >/dev/null
REL=$(psql_at "$P1" -c "SELECT pg_relation_filepath('damaged')")
printf 'garbage!' | dd of="$PGDATA/$REL" bs=1 seek=$((8192 * 3 + 4000)) conv=notrunc status=none
before=$(list_bases)
expect_exit 4 agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" --json
grep -q "checksum failure in $REL block 3" "$T"/stderr || fail "the damaged page was not named"
[[ $(list_bases) -eq $((before + 1)) ]] || fail "the backup with a damaged page was not stored"

note "5. bad input: nothing half-stored is listed"
before=$(list_bases)
DOWN=$(free_port 24800)
expect_exit 1 agent backup -d "host=127.0.0.1 port=$DOWN user=postgres dbname=postgres connect_timeout=5"
grep -q "node main: could not connect" "$T"/stderr || fail "no clear message for a node that is down"
expect_exit 1 agent backup -d "host=127.0.0.1 port=$P1 user=nobody_here dbname=postgres"
grep -q 'role "nobody_here" does not exist' "$T"/stderr || fail "no clear message for a wrong role"
# A file in PGDATA the agent cannot read (left there by root): the backup stops and says which.
echo secret >"$PGDATA"/root-only.conf && chmod 600 "$PGDATA"/root-only.conf
expect_exit 1 agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres"
grep -q "root-only.conf.*Permission denied" "$T"/stderr || fail "no clear message for an unreadable file in PGDATA"
rm "$PGDATA"/root-only.conf
expect_exit 64 agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" -D "$T"/pg2
grep -q "is not the data directory of the server" "$T"/stderr || fail "a copy of the data directory was not refused"
[[ $(list_bases) -eq $before ]] || fail "a failed backup is listed"

note "6. WAL that does not get archived: the backup fails after --archive-timeout, unlisted"
psql_at "$P1" -c "ALTER SYSTEM SET archive_command = '/bin/false'" -c "SELECT pg_reload_conf()" >/dev/null
expect_exit 1 agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" --archive-timeout 3
grep -q "was not archived within 3 s" "$T"/stderr || fail "no clear message for WAL that is not archived"
[[ $(list_bases) -eq $before ]] || fail "a backup whose WAL is not archived is listed"
expect_exit 64 agent backup --archive-timeout 0
psql_at "$P1" -c "ALTER SYSTEM RESET archive_command" -c "SELECT pg_reload_conf()" >/dev/null
# Archiving works again: the segments left behind go first, then the next backup's (which
# still reports the damaged page of step 4: exit 4, stored).
expect_exit 4 agent backup -d "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" --json >"$T"/b6.json
[[ $(list_bases) -eq $((before + 1)) ]] || fail "the backup after archiving was fixed is not listed"
STOP_WAL=$(psql_at "$P1" -c "SELECT pg_walfile_name('$(json_get stop_lsn <"$T"/b6.json)')")
[[ -e $PGDATA/pg_wal/archive_status/$STOP_WAL.done || ! -e $PGDATA/pg_wal/$STOP_WAL ]] ||
    fail "the backup returned before its last WAL segment $STOP_WAL was archived"
echo "all base backup checks passed"
