#!/usr/bin/env bash
# The agent service, `pitr-agent serve`, over mutual TLS beside a real PostgreSQL 15 (data
# checksums, archive_command = pitr-agent archive-wal). The agent runs as root, the server as
# postgres.
#  1. handshakes: no client certificate, a self-signed one, one from another CA and an expired
#     one of the cluster CA are refused, each logged once with the peer and the reason;
#  2. with the orchestrator's certificate: /v1/status, /metrics, 404 / 405 / 400 / 413 as
#     JSON, the state file; a second agent on the same port and bad TLS files fail clearly;
#  3. the C client (tests/helpers/agent-call over orchestrator/agent-client.h): status, and a
#     clear TLS error with the wrong certificate or CA, "not reachable" on a closed port;
#  4. POST /v1/postgres/stop and start: pg_ctl runs as postgres, status follows;
#  5. a backup job polled to its end, which must succeed with a snapshot id; a second job
#     meanwhile gets 409; a restore job of that backup into a new directory;
#  6. SIGTERM during a job: the agent lets it finish, exits 0, and the state file says so.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-tls.sh"
. "$(dirname "$0")/lib-pg.sh"
require curl openssl
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"
CALL=$(helper agent-call)

P=$T/pki
make_pki "$P"
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
mkdir "$T"/state
chown -R postgres: "$REPO" "$T"/repo.key

PGPORT=$(free_port 21470)
AP=$(free_port 21620)
URL=https://127.0.0.1:$AP
psql1() { psql_at "$PGPORT" "$@"; }

PGDATA=$T/pg1
ARCHIVE_COMMAND="$AGENT -r $REPO --key-file $T/repo.key --node main archive-wal %p %f"
pg_init "$PGDATA" "$PGPORT" "$ARCHIVE_COMMAND"
pg_start "$PGDATA" "$T"/pg1.log
[[ $(psql1 -c "SHOW data_checksums") == on ]] || fail "data checksums are off"
# Something archived, so that the archiving fields have values.
LAST=$(psql1 -c "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g" \
    -c "SELECT pg_walfile_name(pg_switch_wal())")
for ((i = 0; i < 300; i++)); do
    [[ -f $REPO/wal/main/00000001/$LAST ]] && break
    sleep 0.1
done
[[ -f $REPO/wal/main/00000001/$LAST ]] || fail "$LAST was not archived within 30 s"

AGENT_LOG=$T/agent.log
STATE=$T/state/agent.json
CONNINFO="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
# The agent unlocks the repository with the key file only, as a service would.
agent() { env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n main -d "$CONNINFO" -D "$PGDATA" "$@"; }
AGENT_PID=
start_agent() {
    # A simple command, not the function: $! must be the agent's own pid (env execs it).
    env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n main -d "$CONNINFO" \
        -D "$PGDATA" serve --listen "127.0.0.1:$AP" --tls-cert "$P"/server.crt \
        --tls-key "$P"/server.key --tls-ca "$P"/ca.crt --state-file "$STATE" \
        --pg-log "$T"/pg1.log -v >>"$AGENT_LOG" 2>&1 &
    AGENT_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q 'serving on' "$AGENT_LOG" && return 0
        kill -0 "$AGENT_PID" 2>/dev/null || { cat "$AGENT_LOG" >&2; fail "the agent exited at start"; }
        sleep 0.1
    done
    cat "$AGENT_LOG" >&2
    fail "the agent did not start listening within 10 s"
}
stop_agent() {
    [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null || return 0
    kill -TERM "$AGENT_PID"
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$AGENT_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
}
cleanup_hooks+=("stop_agent")
start_agent
echo "agent on $URL (pid $AGENT_PID), PostgreSQL on port $PGPORT"

# http METHOD PATH [curl args]: prints the status code; the body goes to $T/body.
http() {
    local m=$1 p=$2
    shift 2
    curl -sS --max-time 120 --cacert "$P"/ca.crt --cert "$P"/client.crt --key "$P"/client.key \
        -X "$m" -o "$T"/body -w '%{http_code}' "$@" "$URL$p" || fail "curl $m $p failed"
}
# check_json PYTHON-EXPRESSION [MESSAGE]: evaluate with `j` = the JSON in $T/body.
check_json() {
    python3 - "$T"/body "$1" <<'EOF' || { cat "$T"/body >&2; echo >&2; fail "${2:-$1}"; }
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}

note "1. handshakes that must be refused"
# refused NAME REASON [curl args]: no reply, and exactly one new log line naming the peer
# address and the reason.
more_refusals_than() { (($(grep -c 'refused TLS connection' "$AGENT_LOG" || true) > $1)); }
refused() {
    local name=$1 reason=$2 before after line
    shift 2
    before=$(grep -c 'refused TLS connection' "$AGENT_LOG" || true)
    if curl -sS --max-time 10 --cacert "$P"/ca.crt "$@" "$URL"/v1/status >"$T"/out 2>"$T"/err; then
        fail "$name: the agent answered: $(cat "$T"/out)"
    fi
    [[ -s $T/out ]] && fail "$name: a reply came through: $(cat "$T"/out)"
    echo "$name: curl says: $(head -1 "$T"/err)"
    # The agent logs after its alert went out, so curl may be done first: wait for the line,
    # then a moment more, so that a second line (which would be a bug) is seen too.
    wait_until 10 more_refusals_than "$before" || true # counted just below
    sleep 0.2
    after=$(grep -c 'refused TLS connection' "$AGENT_LOG" || true)
    [[ $after -eq $((before + 1)) ]] || fail "$name: $((after - before)) refusal lines in the agent log, expected 1"
    line=$(grep 'refused TLS connection' "$AGENT_LOG" | tail -1)
    echo "  agent: $line"
    [[ $line == *"from 127.0.0.1:"* ]] || fail "$name: the log line lacks the peer address"
    [[ $line == *"$reason"* ]] || fail "$name: the log line does not say \"$reason\""
}
refused "no client certificate" "no client certificate"
refused "self-signed certificate" "self-signed certificate" --cert "$P"/selfsigned.crt --key "$P"/selfsigned.key
refused "certificate of another CA" "unable to get local issuer certificate" --cert "$P"/other.crt --key "$P"/other.key
refused "expired certificate" "certificate has expired" --cert "$P"/expired.crt --key "$P"/expired.key
# TLS 1.1 is refused too, with the right certificate. SECLEVEL=0 lets this OpenSSL offer
# TLS 1.1 at all: without it the client gives up by itself and the check proves nothing.
refused "TLS 1.1" "unsupported protocol" --tlsv1.1 --tls-max 1.1 --ciphers 'DEFAULT:@SECLEVEL=0' \
    --cert "$P"/client.crt --key "$P"/client.key

note "2. status, metrics, errors, state file"
assert_eq "$(http GET /v1/status)" 200 "GET /v1/status"
cat "$T"/body
check_json 'j["node"] == "main" and j["agent_version"] and j["pgdata"] == "'"$PGDATA"'"' "status: node, version, pgdata"
check_json 'j["postgres"]["reachable"] is True and j["postgres"]["server_version"].startswith("15") and j["postgres"]["in_recovery"] is False and j["postgres"]["error"] is None' "status: postgres reachable"
check_json 'all(k in j["archiving"] for k in ("healthy", "archived_count", "failed_count", "last_archived_wal", "last_archived_time", "last_failed_wal", "last_failed_time"))' "status: archiving fields"
check_json 'j["archiving"]["healthy"] is True and j["archiving"]["archived_count"] >= 1 and j["archiving"]["failed_count"] == 0 and j["archiving"]["last_archived_wal"] and j["archiving"]["last_archived_time"].endswith("Z")' "status: archiving healthy"
check_json 'j["job"] is None' "status: no job yet"

assert_eq "$(http GET /metrics -D "$T"/headers)" 200 "GET /metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$T"/headers || fail "/metrics content type: $(grep -i content-type "$T"/headers)"
grep -qx 'pitr_postgres_up 1' "$T"/body || { cat "$T"/body; fail "/metrics lacks pitr_postgres_up 1"; }
grep -qx 'pitr_agent_info{version="[0-9.]*",node="main"} 1' "$T"/body || fail "/metrics lacks pitr_agent_info"
for m in pitr_postgres_up pitr_archive_failed_count pitr_archive_archived_count \
    pitr_last_archived_age_seconds pitr_jobs_total pitr_job_running; do
    grep -q "^# TYPE $m " "$T"/body || fail "/metrics: no TYPE line for $m"
    grep -q "^# HELP $m " "$T"/body || fail "/metrics: no HELP line for $m"
    grep -qE "^$m(\{[^}]*\})? [0-9.e+-]+\$" "$T"/body || fail "/metrics: no sample of $m"
done
grep -qx 'pitr_archive_failed_count 0' "$T"/body || fail "/metrics: pitr_archive_failed_count is not 0"
grep -qx 'pitr_job_running 0' "$T"/body || fail "/metrics: pitr_job_running is not 0"

assert_eq "$(http GET /nope)" 404 "unknown path"
check_json '"error" in j' "404 reply is JSON with an error"
assert_eq "$(http GET /v1/jobs/0123456789abcdef)" 404 "unknown job"
assert_eq "$(http GET /v1/backup)" 405 "GET /v1/backup"
check_json '"error" in j' "405 reply is JSON with an error"
assert_eq "$(http POST /v1/status)" 405 "POST /v1/status"
assert_eq "$(http POST /v1/restore -d '{"tagret_dir": "/tmp/x"}')" 400 "restore with an unknown field"
check_json '"tagret_dir" in j["error"]' "400 names the unknown field"
assert_eq "$(http POST /v1/restore -d '{"target_kind": "name"}')" 400 "target name without a value"
assert_eq "$(http POST /v1/backup -d '[1,2]')" 400 "a body that is not an object"
assert_eq "$(http POST /v1/backup -d 'not json')" 400 "a body that is not JSON"
head -c 70000 /dev/zero | tr '\0' ' ' >"$T"/big.json
assert_eq "$(http POST /v1/backup --data-binary @"$T"/big.json)" 413 "a 70 KB body"
check_json '"error" in j' "413 reply is JSON with an error"

python3 -m json.tool "$STATE" >/dev/null || fail "the state file is not valid JSON"
cp "$STATE" "$T"/body
check_json 'j["node"] == "main" and j["pid"] == '"$AGENT_PID"' and j["listen"] == "127.0.0.1:'"$AP"'" and j["started_at"] and j["stopped_at"] is None' "state file contents"

# A second agent on the same port, and bad TLS files: clear errors, no service.
expect_exit 1 agent serve --listen "127.0.0.1:$AP" --tls-cert "$P"/server.crt --tls-key "$P"/server.key --tls-ca "$P"/ca.crt
grep -q "could not listen on 127.0.0.1:$AP: Address already in use" "$T"/stderr || fail "busy port: no clear message"
expect_exit 1 agent serve --listen 127.0.0.1:0 --tls-cert "$T"/missing.crt --tls-key "$P"/server.key --tls-ca "$P"/ca.crt
grep -q 'could not read the TLS certificate ".*missing.crt": No such file' "$T"/stderr || fail "missing certificate: no clear message"
expect_exit 64 agent serve --listen 127.0.0.1:0 --tls-cert "$P"/server.crt --tls-key "$P"/client.key --tls-ca "$P"/ca.crt
grep -q 'does not belong to the certificate' "$T"/stderr || fail "mismatched key: no clear message"
expect_exit 64 agent serve --listen 127.0.0.1:0 --tls-cert "$P"/server.crt --tls-key "$P"/server.key --tls-ca "$P"/ext.cnf
grep -q 'could not load the TLS CA certificates' "$T"/stderr || fail "bad CA file: no clear message"

note "3. the C client"
call() { "$CALL" --ca "$P"/ca.crt --cert "$P"/client.crt --key "$P"/client.key "$@"; }
call "127.0.0.1:$AP" status >"$T"/body 2>"$T"/err || { cat "$T"/err; fail "agent-call status failed"; }
check_json 'j["postgres"]["reachable"] is True and j["node"] == "main"' "agent-call status"
# Hosts that the certificate names both work: the IP SAN and the DNS one.
call "localhost:$AP" status >/dev/null 2>"$T"/err || { cat "$T"/err; fail "agent-call status via localhost failed"; }
rc=0
"$CALL" --ca "$P"/ca.crt --cert "$P"/other.crt --key "$P"/other.key "127.0.0.1:$AP" status >"$T"/out 2>"$T"/err || rc=$?
cat "$T"/err
assert_eq "$rc" 3 "agent-call exit status with another CA's client certificate"
grep -q "TLS with agent 127.0.0.1:$AP failed" "$T"/err || fail "agent-call does not say TLS failed"
grep -q "refused this client's certificate" "$T"/err || fail "agent-call does not say the certificate was refused"
[[ -s $T/out ]] && fail "agent-call printed something on stdout on failure"
rc=0
"$CALL" --ca "$P"/other-ca.crt --cert "$P"/client.crt --key "$P"/client.key "127.0.0.1:$AP" status >/dev/null 2>"$T"/err || rc=$?
cat "$T"/err
assert_eq "$rc" 3 "agent-call exit status when the agent's certificate does not verify"
grep -q 'certificate' "$T"/err || fail "agent-call does not name the certificate problem"
rc=0
CLOSED=$(free_port $((AP + 1)))
call "127.0.0.1:$CLOSED" status >/dev/null 2>"$T"/err || rc=$?
cat "$T"/err
assert_eq "$rc" 4 "agent-call exit status on a closed port"
grep -q "agent 127.0.0.1:$CLOSED is not reachable" "$T"/err || fail "agent-call does not say the agent is not reachable"

note "4. PostgreSQL stop and start through the agent"
assert_eq "$(http POST /v1/postgres/stop)" 200 "POST /v1/postgres/stop"
cat "$T"/body
check_json 'j["ok"] is True and j["changed"] is True' "stop reply"
assert_eq "$(http GET /v1/status)" 200 "status after stop"
check_json 'j["postgres"]["reachable"] is False and j["postgres"]["error"] and j["archiving"]["healthy"] is False' "status after stop: not reachable"
assert_eq "$(http GET /metrics)" 200 "metrics after stop"
grep -qx 'pitr_postgres_up 0' "$T"/body || fail "/metrics after stop lacks pitr_postgres_up 0"
assert_eq "$(http POST /v1/postgres/stop)" 200 "stop when stopped"
check_json 'j["ok"] is True and j["changed"] is False' "stop when stopped changes nothing"
lines_before=$(wc -l <"$T"/pg1.log)
assert_eq "$(http POST /v1/postgres/start)" 200 "POST /v1/postgres/start"
cat "$T"/body
check_json 'j["ok"] is True and j["changed"] is True' "start reply"
assert_eq "$(http GET /v1/status)" 200 "status after start"
check_json 'j["postgres"]["reachable"] is True' "status after start: reachable"
pm=$(head -1 "$PGDATA"/postmaster.pid)
assert_eq "$(ps -o user= -p "$pm" | tr -d ' ')" postgres "user of the postmaster started by the agent"
[[ $(wc -l <"$T"/pg1.log) -gt $lines_before ]] || fail "the server started by the agent did not log into --pg-log"
call "127.0.0.1:$AP" start >"$T"/body 2>"$T"/err || { cat "$T"/err; fail "agent-call start failed"; }
check_json 'j["ok"] is True and j["changed"] is False' "agent-call start when running"

# A backup waits until its last WAL segment is archived: with slow archiving, a job surely
# still runs seconds after it was started.
slow_archiving() { # on|off
    if [[ $1 == on ]]; then
        psql_at "$PGPORT" -c "ALTER SYSTEM SET archive_command = 'sleep 3 && $ARCHIVE_COMMAND'" \
            -c "SELECT pg_reload_conf()" >/dev/null
    else
        psql_at "$PGPORT" -c "ALTER SYSTEM RESET archive_command" -c "SELECT pg_reload_conf()" >/dev/null
    fi
}

note "5. a backup job, a second one meanwhile, a restore"
slow_archiving on # the second request surely comes while the first job runs
assert_eq "$(http POST /v1/backup -d '{"label": "tls-test"}')" 202 "POST /v1/backup"
JOB=$(json_get job <"$T"/body)
code2=$(http POST /v1/backup -d '{}')
cp "$T"/body "$T"/second.json
# Poll until the job is no longer running (5 minutes at most).
for ((i = 0; i < 3000; i++)); do
    assert_eq "$(http GET "/v1/jobs/$JOB")" 200 "GET /v1/jobs/$JOB"
    state=$(json_get state <"$T"/body)
    [[ $state != running ]] && break
    sleep 0.1
done
cp "$T"/body "$T"/job.json
echo "job $JOB: $(cat "$T"/job.json)"
slow_archiving off
case $state in
succeeded)
    check_json 'j["finished"] and j["error"] is None and j["result"] and len(j["result"]["snapshot_id"]) == 16' "a succeeded job has a result and no error" ;;
failed)
    check_json 'j["finished"] and j["error"]' "a failed job has a finish time and an error" ;;
*) fail "job $JOB is still \"$state\" after 5 minutes" ;;
esac
if [[ $code2 == 409 ]]; then
    cp "$T"/second.json "$T"/body
    check_json 'j["running_job"] == "'"$JOB"'" and "'"$JOB"'" in j["error"]' "409 names the running job"
else
    defer_fail "a second POST /v1/backup while job $JOB ran got HTTP $code2, not 409: $(cat "$T"/second.json)"
fi
# The agent reports the same outcome everywhere.
assert_eq "$(http GET /v1/status)" 200 "status after the job"
SECOND=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("job", ""))' "$T"/second.json)
check_json 'j["job"]["id"] in ("'"$JOB"'", "'"$SECOND"'")' "status shows the last job"
python3 -m json.tool "$STATE" >/dev/null || fail "the state file is not valid JSON after the job"
assert_eq "$(http GET /metrics)" 200 "metrics after the job"
grep -qE "^pitr_jobs_total\{kind=\"backup\",state=\"$state\"\} [1-9]" "$T"/body || fail "/metrics does not count the $state backup"
if [[ $state == succeeded ]]; then
    grep -q '^pitr_last_backup_timestamp_seconds ' "$T"/body || fail "/metrics: no pitr_last_backup_timestamp_seconds"
    grep -qE '^pitr_last_backup_bytes [1-9]' "$T"/body || fail "/metrics: no pitr_last_backup_bytes"
    SNAPID=$(json_get result.snapshot_id <"$T"/job.json)
    # Files the root agent wrote into the repository belong to postgres, like the archive's.
    bad=$(find "$REPO" ! -user postgres | head -5 || true)
    [[ -z $bad ]] || defer_fail "files in the repository not owned by postgres after the backup: $bad"
    assert_eq "$(http POST /v1/restore -d '{"backup": "'"$SNAPID"'", "target_dir": "'"$T"'/restored", "target_kind": "immediate"}')" 202 "POST /v1/restore"
    RJOB=$(json_get job <"$T"/body)
    call "127.0.0.1:$AP" wait "$RJOB" >"$T"/body 2>"$T"/err || { cat "$T"/err "$T"/body; defer_fail "restore job $RJOB failed"; }
    if [[ $(json_get state <"$T"/body) == succeeded ]]; then
        check_json 'j["result"]["snapshot_id"] == "'"$SNAPID"'" and j["result"]["files"] > 0' "restore result"
        [[ -f $T/restored/PG_VERSION ]] || fail "the restored directory has no PG_VERSION"
        assert_eq "$(stat -c %U "$T"/restored/PG_VERSION)" postgres "owner of the restored files"
    fi
else
    defer_fail "backup job $JOB failed: $(json_get error <"$T"/job.json)"
fi

note "6. SIGTERM while a job runs"
slow_archiving on # the job surely still runs when SIGTERM comes
assert_eq "$(http POST /v1/backup -d '{"label": "at-shutdown"}')" 202 "POST /v1/backup before SIGTERM"
LASTJOB=$(json_get job <"$T"/body)
assert_eq "$(http GET "/v1/jobs/$LASTJOB")" 200 "GET /v1/jobs/$LASTJOB before SIGTERM"
assert_eq "$(json_get state <"$T"/body)" running "state of the job when SIGTERM is sent"
kill -TERM "$AGENT_PID"
rc=0
for ((i = 0; i < 3000; i++)); do
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$AGENT_PID" 2>/dev/null && fail "the agent did not exit within 5 minutes of SIGTERM"
wait "$AGENT_PID" || rc=$?
assert_eq "$rc" 0 "the agent's exit status after SIGTERM"
slow_archiving off
grep -q 'stopped$' "$AGENT_LOG" || fail "the agent log does not say it stopped"
cp "$STATE" "$T"/body
check_json 'j["stopped_at"] and j["running_job"] is None and j["jobs"]["backup"]["id"] == "'"$LASTJOB"'" and j["jobs"]["backup"]["state"] in ("succeeded", "failed")' "state file after SIGTERM"
AGENT_PID=
echo "--- agent log:"
cat "$AGENT_LOG"
echo "all agent service checks done"
