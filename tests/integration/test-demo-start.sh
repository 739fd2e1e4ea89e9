#!/usr/bin/env bash
# The agent start of `make demo` (demo_start_agent in tests/demo.sh, which demo/start.sh
# carries): it reports an agent ready only when this start serves. Its log is appended to
# across starts, so an old "serving on" line must not count: an agent that cannot bind its
# port (taken by the agent already running, with that agent's "serving on" in the same log)
# fails the start loudly, naming what the agent said, and so does an agent that dies at once.
# A free port starts and is served.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing"
# The function only: sourced, tests/demo.sh stops after defining it.
. "$PITR_SRC"/tests/demo.sh
declare -F demo_start_agent >/dev/null || fail "tests/demo.sh does not define demo_start_agent"

make_pki "$T"/pki >/dev/null
init_repo "$T"/repo
"$SNAP" -r "$T"/repo key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
PORT=$(free_port 23600)
agent_cmd() { # agent_cmd PORT [CERT]: the demo's agent command line, in CMD; no server behind it
    CMD=(env -u PITR_PASSPHRASE "$AGENT" -r "$T"/repo --key-file "$T"/repo.key -n n1 -D "$T"/n1
        -d "host=127.0.0.1 port=1" serve --listen "127.0.0.1:$1" --tls-cert "${2:-$T/pki/server.crt}"
        --tls-key "$T"/pki/server.key --tls-ca "$T"/pki/ca.crt --pg-log "$T"/n1.log)
}
LOG=$T/agent.log

note "a free port: ready, and serving"
agent_cmd "$PORT"
demo_start_agent "$LOG" "${CMD[@]}" 2>"$T"/stderr || { cat "$T"/stderr; fail "the agent did not start"; }
FIRST=$(cat "$LOG".pid)
cleanup_hooks+=("kill $FIRST 2>/dev/null")
kill -0 "$FIRST" || fail "the agent reported ready is not running"
(echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null || fail "nothing listens on the port of the agent reported ready"
grep -q 'serving on' "$LOG" || fail "sanity: the log has no 'serving on' line"

note "the port taken, the old 'serving on' in the same log: the start fails, saying why"
rc=0
demo_start_agent "$LOG" "${CMD[@]}" 2>"$T"/stderr || rc=$?
cat "$T"/stderr
SECOND=$(cat "$LOG".pid)
[[ $rc -ne 0 ]] || fail "an agent that could not bind its port was reported started"
kill -0 "$SECOND" 2>/dev/null && fail "the second agent is still running"
grep -q "exited before it served" "$T"/stderr || fail "the failed start does not say the agent exited"
grep -q "could not listen on 127.0.0.1:$PORT: Address already in use" "$T"/stderr ||
    fail "the failed start does not show what the agent said"
grep -q "serving on" "$T"/stderr && fail "the failed start shows the earlier start's output"
kill -0 "$FIRST" || fail "the first agent died"

note "an agent that dies at once (a certificate that does not exist) fails the start too"
rc=0
agent_cmd $((PORT + 1)) "$T"/pki/missing.crt
demo_start_agent "$LOG" "${CMD[@]}" 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "an agent without its certificate was reported started"
grep -q "missing.crt" "$T"/stderr || fail "the failed start does not show the agent's complaint"
echo "demo start ok"
