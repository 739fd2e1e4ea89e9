#!/usr/bin/env bash
# The passphrase prompt on a terminal: asked without echo, twice at init (and a mismatch
# refused), once to open; no terminal and no other source gives exit 2 and a hint.
source "$(dirname "$0")/lib.sh"
REPO="$T/repo"
unset PITR_PASSPHRASE

# Run pitr-snap on a new pseudo-terminal, answer each "Passphrase:"-style prompt in turn, and
# print the exit status and everything the terminal showed.
on_tty() {
    python3 - "$@" <<'PY'
import os, pty, sys
answers = sys.argv[1].split(",") if sys.argv[1] else []
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
# A prompt that never comes, or a child that never exits, must not hang the test suite.
import signal
signal.signal(signal.SIGALRM, lambda *_: (os.kill(pid, signal.SIGKILL), sys.exit("no end within 60 s")))
signal.alarm(60)
seen, out = 0, b""
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    while seen < len(answers) and out.count(b"assphrase: ") > seen:
        os.write(fd, answers[seen].encode() + b"\n")
        seen += 1
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\nEXIT=%d\n" % os.waitstatus_to_exitcode(status))
PY
}

note "init asks twice; a mismatch is refused and creates nothing"
on_tty "one,two" "$SNAP" -r "$REPO" init --scrypt-n 1024 >"$T/out" || fail "pty helper failed"
grep -q "EXIT=64" "$T/out" || { cat "$T/out"; fail "mismatched passphrases were not refused with 64"; }
grep -q "do not match" "$T/out" || fail "no message about the mismatch"
[[ ! -e $REPO/config ]] || fail "a repository was created despite the mismatch"

note "init with the same passphrase twice"
on_tty "s3cret-word,s3cret-word" "$SNAP" -r "$REPO" init --scrypt-n 1024 >"$T/out" || fail "pty helper failed"
grep -q "EXIT=0" "$T/out" || { cat "$T/out"; fail "init on a terminal failed"; }
grep -q "Repeat passphrase: " "$T/out" || fail "init did not ask for the passphrase again"
grep -q "s3cret-word" "$T/out" && fail "the passphrase was echoed to the terminal"

note "open asks once; a wrong answer exits 2"
echo hello | PITR_PASSPHRASE=s3cret-word "$SNAP" -q -r "$REPO" store --stdin --name s >/dev/null \
    || fail "store with the environment variable failed"
on_tty "s3cret-word" "$SNAP" -r "$REPO" cat s >"$T/out" || fail "pty helper failed"
grep -q "EXIT=0" "$T/out" || { cat "$T/out"; fail "cat with a prompted passphrase failed"; }
grep -q "hello" "$T/out" || fail "cat did not print the stream"
grep -q "s3cret-word" "$T/out" && fail "the passphrase was echoed to the terminal"
on_tty "wrong" "$SNAP" -r "$REPO" list >"$T/out" || fail "pty helper failed"
grep -q "EXIT=2" "$T/out" || { cat "$T/out"; fail "a wrong prompted passphrase did not exit 2"; }

note "no terminal and no passphrase source"
expect_exit 2 setsid -w "$SNAP" -r "$REPO" list </dev/null  # setsid: no controlling terminal
grep -q "HINT" "$T/stderr" || fail "no hint about where a passphrase can come from"
echo "prompt ok"
