#!/usr/bin/env bash
# create --restore-point-only takes each node's newest base backup on the history of the timeline
# the node is on now, not the newest one.
# Two PostgreSQL 15 nodes (coord, w1) archive into one repository. Worker w1 goes through three
# timelines: base backup B1 on timeline 1, a restore point "fork", more work, base backup B1b
# (timeline 1, after the fork); restored from B1 to "fork" it promotes to timeline 2, where base
# backup B2 is taken; restored from B1 to "fork" once more it promotes to timeline 3, whose
# history is 1 -> 3 at the fork. Timeline 2 is abandoned, and so is the stretch of timeline 1
# after the fork: B2 and B1b, though newer, do not recover along timeline 3.
#   - create --restore-point-only takes B1 for w1, says so, and names the two it passed over;
#     recovered from B1 along timeline 3, w1 stops at the snapshot's restore point with the
#     timeline 3 rows (the newest backup, B2, would not get there);
#   - once B3 is taken on timeline 3, it is the one taken;
#   - with only backups off the history left, create fails naming the node (exit 6).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
PROBE=$(helper barrier-probe)
[[ -x $AGENT ]] || fail "$AGENT is missing"

make_pki "$T"/pki
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key "$T"/pki

NODES=(coord w1)
declare -A PORT
next=23600
for n in "${NODES[@]}"; do
    PORT[$n]=$(free_port $next); next=$((PORT[$n] + 1))
done
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} user=postgres dbname=postgres"; }
for n in "${NODES[@]}"; do
    pg_init "$T/$n" "${PORT[$n]}" "$AGENT -q -r $REPO --key-file $T/repo.key -n $n archive-wal %p %f"
    pg_start "$T/$n" "$T/$n.log"
done
cat >"$T"/pitr.yaml <<EOF
cluster: test
repository: { location: $REPO, key_file: $T/repo.key }
tls: { ca: pki/ca.crt, cert: pki/client.crt, key: pki/client.key }
nodes:
  - { name: coord, role: coordinator, conninfo: "$(conninfo coord)", agent: "127.0.0.1:1" }
  - { name: w1, role: worker, conninfo: "$(conninfo w1)", agent: "127.0.0.1:2" }
EOF
snap() { as_pg "$SNAP" -c "$T"/pitr.yaml "$@"; }
agent() { as_pg env -u PITR_PASSPHRASE "$AGENT" -q -r "$REPO" --key-file "$T"/repo.key "$@"; }
"$PROBE" -c "$T"/pitr.yaml --sql setup | psql_at "${PORT[coord]}" >/dev/null || fail "barrier setup SQL failed"
backup() { # backup NODE: prints the new base backup's id
    agent -n "$1" backup -d "$(conninfo "$1")" -D "$T/$1" --json >"$T"/backup.json ||
        fail "base backup of $1 failed"
    json_get snapshot_id <"$T"/backup.json
}
timeline() { psql_at "${PORT[$1]}" -c "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"; }
restore_w1_to_fork() { # from B1, along timeline 1, in place
    pg_stop "$T"/w1
    agent -n w1 restore "$B1" --target-dir "$T"/w1 --delta --target-name fork --target-timeline 1 \
        >/dev/null || fail "restore of w1 to the fork failed"
    pg_start "$T"/w1 "$T"/w1.log
    wait_promoted "${PORT[w1]}" "$T"/w1.log
}
# snapshot_backup ID NODE: the base backup the cluster snapshot ID records for NODE
snapshot_backup() {
    snap list --json | python3 -c 'import json, sys
s = [s for s in json.load(sys.stdin) if s["id"] == sys.argv[1]][0]
print([n["base_backup"] for n in s["meta"]["nodes"] if n["name"] == sys.argv[2]][0])' "$1" "$2" ||
        fail "snapshot $1 has no base backup for $2"
}

note "w1: timeline 1, a fork, timeline 2, back to the fork: timeline 3"
B_COORD=$(backup coord)
psql_at "${PORT[w1]}" -c "CREATE TABLE t (v text)" -c "INSERT INTO t VALUES ('before')" >/dev/null
B1=$(backup w1)
psql_at "${PORT[w1]}" -c "SELECT pg_create_restore_point('fork')" -c "INSERT INTO t VALUES ('after')" >/dev/null
B1B=$(backup w1)
restore_w1_to_fork
assert_eq "$(timeline w1)" 2 "w1's timeline after the first restore"
psql_at "${PORT[w1]}" -c "INSERT INTO t VALUES ('timeline 2')" >/dev/null
B2=$(backup w1)
history_archived() { [[ -f $REPO/wal/w1/history/00000002.history ]]; }
wait_until 60 history_archived || fail "00000002.history was not archived"
restore_w1_to_fork
assert_eq "$(timeline w1)" 3 "w1's timeline after the second restore"
# Where timeline 1 ends on w1's history, as PostgreSQL wrote it: at the fork.
FORK=$(psql_at "${PORT[w1]}" -c "SELECT split_part(split_part(pg_read_file('pg_wal/00000003.history'), E'\n', 1), E'\t', 2)")
[[ $FORK =~ ^[0-9A-F]+/[0-9A-F]+$ ]] || fail "no switch point in 00000003.history: '$FORK'"
psql_at "${PORT[w1]}" -c "INSERT INTO t VALUES ('timeline 3')" >/dev/null
echo "backups of w1: B1 $B1 (timeline 1), B1b $B1B (timeline 1, after the fork), B2 $B2 (timeline 2)"

note "create --restore-point-only takes B1, the newest on timeline 3's history"
snap create --restore-point-only --json >"$T"/c1.json 2>"$T"/c1.err || { cat "$T"/c1.err; fail "create failed"; }
cat "$T"/c1.err
id=$(json_get id <"$T"/c1.json)
csn=$(json_get csn <"$T"/c1.json)
assert_eq "$(snapshot_backup "$id" w1)" "$B1" "w1's base backup in the snapshot"
assert_eq "$(snapshot_backup "$id" coord)" "$B_COORD" "coord's base backup in the snapshot"
grep -q "node w1: on timeline 3; restore point against base backup $B1 (timeline 1," "$T"/c1.err ||
    fail "create did not say which base backup it took for w1"
grep -q "node w1: passing over base backup $B2 (timeline 2, .*): timeline 2 is not on the node's history" "$T"/c1.err ||
    fail "create did not name B2, of the abandoned timeline 2, as passed over"
grep -q "node w1: passing over base backup $B1B (timeline 1, .*): on the node's history, timeline 1 ends at $FORK, before the backup was over" "$T"/c1.err ||
    fail "create did not name B1b, of timeline 1 after the fork, as passed over"
grep -q "node coord: on timeline 1; restore point against base backup $B_COORD" "$T"/c1.err ||
    fail "create did not say which base backup it took for coord"

note "recovered from it along timeline 3, w1 stops at the snapshot's restore point"
side=$T/side-w1
agent -n w1 restore "$B1" --target-dir "$side" --target-name "pitr_csn_$csn" --target-timeline 3 >/dev/null ||
    fail "restore of the side copy failed"
port=$(free_port $next); next=$((port + 1))
as_pg "$PGBIN"/pg_ctl -D "$side" -l "$T"/side.log -o "-p $port -c archive_mode=off" -w -t 90 start >/dev/null ||
    { tail -30 "$T"/side.log; fail "the side copy did not start"; }
cleanup_hooks+=("as_pg '$PGBIN/pg_ctl' -D '$side' -m immediate stop >/dev/null 2>&1")
wait_promoted "$port" "$T"/side.log
grep -q "recovery stopping at restore point \"pitr_csn_$csn\"" "$T"/side.log ||
    { tail -30 "$T"/side.log; fail "the copy did not stop at pitr_csn_$csn"; }
assert_eq "$(psql_at "$port" -c "SELECT string_agg(v, ',' ORDER BY v) FROM t")" "before,timeline 3" \
    "rows of the copy recovered along timeline 3"
as_pg "$PGBIN"/pg_ctl -D "$side" -m fast -w stop >/dev/null

note "a base backup on timeline 3 is the newest on its history"
B3=$(backup w1)
snap create --restore-point-only --json >"$T"/c2.json 2>"$T"/c2.err || { cat "$T"/c2.err; fail "create failed"; }
assert_eq "$(snapshot_backup "$(json_get id <"$T"/c2.json)" w1)" "$B3" "w1's base backup once B3 exists"
grep -q "passing over" "$T"/c2.err && fail "create passed over a backup newer than B3: $(cat "$T"/c2.err)"

note "no base backup on the history left: create fails naming the node (exit 6)"
# The cluster snapshots first: they restore w1 from B1 and B3.
for s in "$id" "$(json_get id <"$T"/c2.json)" "$B3" "$B1"; do
    snap delete "$s" >/dev/null 2>&1 || fail "delete of $s failed"
done
expect_exit 6 snap create --restore-point-only
grep -q "node w1: has no base backup on the history of its timeline 3 (2 newer ones are not): run a full create first" "$T"/stderr ||
    fail "no clear message for a node without a usable base backup"
echo "timeline checks passed"
