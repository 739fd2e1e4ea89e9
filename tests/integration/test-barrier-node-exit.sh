#!/usr/bin/env bash
# A cluster operation that fails on a node exits 6, whatever the node's own error was.
# Two PostgreSQL 15 nodes (coord, w1), each with its pitr-agent over mutual TLS, archive into
# one repository; a full create makes a snapshot. Then w1's agent is kept busy with a base
# backup that waits for its WAL (w1's archive_command fails for a while), so it answers
# 409 Conflict to anything else:
#   - a side-copy restore of the snapshot lays down coord, names w1 as failed with the agent's
#     reason, and exits 6 (not 5, "repository busy", which an agent's 409 used to become);
#     --json says the same per node;
#   - a full create fails on w1, exits 6 and lists nothing;
#   - once w1's agent is free again, the same restore finishes (exit 0);
#   - config check with w1's agent down exits 6, naming it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
PROBE=$(helper barrier-probe)
CALL=$(helper agent-call)
require setpriv
[[ -x $AGENT ]] || fail "$AGENT is missing"

make_pki "$T"/pki
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key "$T"/pki

NODES=(coord w1)
declare -A PORT APORT AGENT_PID
next=24600
for n in "${NODES[@]}"; do
    PORT[$n]=$(free_port $next); next=$((PORT[$n] + 1))
    APORT[$n]=$(free_port $next); next=$((APORT[$n] + 1))
done
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} user=postgres dbname=postgres"; }
agent_start() { # the agent runs as PostgreSQL's OS user, as in production
    local n=$1 i
    setpriv --reuid=postgres --regid=postgres --init-groups \
        env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n "$n" \
        -d "$(conninfo "$n")" -D "$T/$n" serve --listen "127.0.0.1:${APORT[$n]}" \
        --tls-cert "$T"/pki/server.crt --tls-key "$T"/pki/server.key --tls-ca "$T"/pki/ca.crt \
        --pg-log "$T/$n.log" >>"$T/agent-$n.log" 2>&1 &
    AGENT_PID[$n]=$!
    cleanup_hooks+=("kill ${AGENT_PID[$n]} 2>/dev/null")
    for ((i = 0; i < 100; i++)); do
        grep -q 'serving on' "$T/agent-$n.log" 2>/dev/null && return 0
        kill -0 "${AGENT_PID[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$T/agent-$n.log" >&2
    fail "agent $n did not start"
}
for n in "${NODES[@]}"; do
    pg_init "$T/$n" "${PORT[$n]}" "$AGENT -q -r $REPO --key-file $T/repo.key -n $n archive-wal %p %f"
    pg_start "$T/$n" "$T/$n.log"
    agent_start "$n"
done
cat >"$T"/pitr.yaml <<EOF
cluster: test
repository: { location: $REPO, key_file: $T/repo.key }
tls: { ca: pki/ca.crt, cert: pki/client.crt, key: pki/client.key }
nodes:
  - { name: coord, role: coordinator, conninfo: "$(conninfo coord)", agent: "127.0.0.1:${APORT[coord]}" }
  - { name: w1, role: worker, conninfo: "$(conninfo w1)", agent: "127.0.0.1:${APORT[w1]}" }
EOF
snap() { as_pg "$SNAP" -c "$T"/pitr.yaml "$@"; }
call() { "$CALL" --ca "$T"/pki/ca.crt --cert "$T"/pki/client.crt --key "$T"/pki/client.key "$@"; }
"$PROBE" -c "$T"/pitr.yaml --sql setup | psql_at "${PORT[coord]}" >/dev/null || fail "barrier setup SQL failed"
n_snapshots() { snap list --json | python3 -c 'import json,sys; print(sum(s["kind"] == "cluster" for s in json.load(sys.stdin)))'; }

note "a full create"
snap create --json >"$T"/create.json 2>"$T"/create.err || { cat "$T"/create.err; fail "create failed"; }
id=$(json_get id <"$T"/create.json)

note "w1's agent busy with a base backup that waits for its WAL"
psql_at "${PORT[w1]}" -c "ALTER SYSTEM SET archive_command = '/bin/false'" -c "SELECT pg_reload_conf()" >/dev/null
call "127.0.0.1:${APORT[w1]}" backup held >"$T"/job.json || fail "could not start the backup on w1"
job=$(json_get job <"$T"/job.json)
w1_busy() { [[ $(call "127.0.0.1:${APORT[w1]}" job "$job" | json_get state) == running ]]; }
wait_until 30 w1_busy || fail "w1's agent does not show the backup running"

note "a side-copy restore: coord laid down, w1 named as failed, exit 6"
expect_exit 6 snap restore "$id" --target-dir "$T"/side1
grep -q "node w1: could not start the restore: .*job $job is running" "$T"/stderr ||
    fail "the failure does not name w1 and the agent's reason"
[[ -f $T/side1/coord/PG_VERSION ]] || fail "coord was not laid down"
[[ ! -e $T/side1/w1 ]] || fail "w1 was laid down although its agent was busy"
rc=0; snap restore "$id" --target-dir "$T"/side2 --json >"$T"/restore.json 2>/dev/null || rc=$?
assert_eq "$rc" 6 "exit status of restore --json with a node failed"
python3 - "$T"/restore.json <<'EOF' || fail "restore --json does not say which node failed"
import json, sys
nodes = {n["node"]: n for n in json.load(open(sys.argv[1]))["nodes"]}
assert nodes["coord"]["ok"] is True and nodes["coord"].get("error") is None, nodes
assert nodes["w1"]["ok"] is False and "is running" in nodes["w1"]["error"], nodes
EOF

note "a full create with w1's agent busy: exit 6, nothing listed"
before=$(n_snapshots)
expect_exit 6 snap create --label busy
grep -q "node w1: could not start the backup: .*job $job is running" "$T"/stderr ||
    fail "the failed create does not name w1 and the agent's reason"
assert_eq "$(n_snapshots)" "$before" "cluster snapshots after a failed create"

note "w1's agent free again: the same restore finishes"
psql_at "${PORT[w1]}" -c "ALTER SYSTEM RESET archive_command" -c "SELECT pg_reload_conf()" >/dev/null
call "127.0.0.1:${APORT[w1]}" wait "$job" >/dev/null 2>&1 || fail "the backup on w1 did not finish once archiving worked"
snap restore "$id" --target-dir "$T"/side3 >"$T"/rerun.out 2>&1 || { cat "$T"/rerun.out; fail "the rerun failed"; }
for n in "${NODES[@]}"; do
    [[ -f $T/side3/$n/PG_VERSION && -f $T/side3/$n/recovery.signal ]] || fail "$n was not laid down"
done

note "config check with w1's agent down: exit 6, naming it"
kill -TERM "${AGENT_PID[w1]}"
wait "${AGENT_PID[w1]}" 2>/dev/null || true
expect_exit 6 snap config check
grep -q "node w1: agent 127.0.0.1:${APORT[w1]}" "$T"/stderr || fail "config check does not name w1's agent"
echo "node failure checks passed"
