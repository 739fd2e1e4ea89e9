#!/usr/bin/env bash
# What pitr-snap, pitr-agent and mount.pitrfs say to a mistyped command line, to a key file that
# does not unlock the repository, and what config check says of an agent that cannot be reached:
#   - an unknown option, a missing value, a value an option does not take, an ambiguous prefix,
#     or no command: exit 64 with exactly one error line naming the option as typed and one
#     hint, never the whole help;
#   - pitr-agent serve --help (and --help serve) is serve's own help;
#   - a key file of another repository or no key file at all: exit 2 (130 from restore-wal),
#     the reason and "the key file ... does not unlock repository ...", never strerror's "Key
#     was rejected by service";
#   - config check names an unreachable agent's address once in each line, not twice.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
require fusermount3 mountpoint
AGENT=$PITR_BIN/pitr-agent
MOUNT=$PITR_BIN/mount.pitrfs
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"

# expect_usage_error PROGRAM 'ERROR' ARGS...: exit 64, nothing on standard output, and on
# standard error exactly "NAME: error: ERROR" and "HINT: see NAME --help".
expect_usage_error() {
    local prog=$1 error=$2 name
    shift 2
    name=$(basename "$prog")
    expect_exit 64 "$prog" "$@" >"$T"/stdout
    [[ ! -s $T/stdout ]] || fail "$name $*: printed on standard output: $(head -3 "$T"/stdout)"
    diff <(printf '%s: error: %s\nHINT: see %s --help\n' "$name" "$error" "$name") "$T"/stderr ||
        fail "$name $*: not exactly the error and the hint expected"
}

# The same for an abbreviation of several options: the error names it and some of them (which
# ones depends on the options there are).
expect_ambiguous() { # PROGRAM ABBREVIATION ONE OTHER ARGS...
    local prog=$1 abbrev=$2 one=$3 other=$4 name
    shift 4
    name=$(basename "$prog")
    expect_exit 64 "$prog" "$@" >"$T"/stdout
    [[ ! -s $T/stdout && $(wc -l <"$T"/stderr) -eq 2 ]] || fail "$name $*: not one error and one hint"
    head -1 "$T"/stderr | grep -q "^$name: error: option '$abbrev' is ambiguous: it could be .*$one" &&
        head -1 "$T"/stderr | grep -q -- "$other" || fail "$name $*: the error does not name $abbrev, $one and $other"
    tail -1 "$T"/stderr | grep -qx "HINT: see $name --help" || fail "$name $*: no hint"
}

note "pitr-snap: mistyped options"
expect_usage_error "$SNAP" "unknown option '--x'" --x
expect_usage_error "$SNAP" "unknown option '--no-such-option'" --no-such-option=1 list
expect_usage_error "$SNAP" "unknown option '-Z'" -Z list
expect_usage_error "$SNAP" "unknown option '-Z'" list -qZ
expect_usage_error "$SNAP" "option '--json' takes no value" --json=yes list
expect_usage_error "$SNAP" "option '--repo' needs a value" list --repo
expect_usage_error "$SNAP" "option '-r' needs a value" list -r
expect_ambiguous "$SNAP" --pa --parallel --page-size --pa=x list
expect_usage_error "$SNAP" "no command given"

note "pitr-agent: mistyped options"
expect_usage_error "$AGENT" "unknown option '--x'" --x
expect_usage_error "$AGENT" "unknown option '--bogus'" serve --bogus
expect_usage_error "$AGENT" "unknown option '-Z'" -qZ wal-check
expect_usage_error "$AGENT" "option '--json' takes no value" wal-check --json=1
expect_usage_error "$AGENT" "option '--listen' needs a value" serve --listen
expect_usage_error "$AGENT" "option '-n' needs a value" wal-check -n
expect_ambiguous "$AGENT" --target-t --target-time --target-timeline restore --target-t=1
expect_usage_error "$AGENT" "no command given"

note "mount.pitrfs: mistyped options"
expect_usage_error "$MOUNT" "unknown option '--bogus'" --bogus
expect_usage_error "$MOUNT" "unknown option '-x'" "$T" "$T" -x

note "pitr-agent serve --help is serve's help"
for args in "serve --help" "--help serve" "-r $T/repo serve -h"; do
    # shellcheck disable=SC2086 # (word splitting wanted)
    "$AGENT" $args >"$T"/help 2>"$T"/stderr || fail "pitr-agent $args did not exit 0"
    [[ ! -s $T/stderr ]] || fail "pitr-agent $args wrote to standard error: $(cat "$T"/stderr)"
    head -1 "$T"/help | grep -q '^pitr-agent serve is the agent service' ||
        fail "pitr-agent $args is not serve's help: $(head -1 "$T"/help)"
    for o in --listen --tls-cert --tls-key --tls-ca --state-file --pg-bin --pg-log \
        --max-connections --handshake-timeout --pgdata --key-file; do
        grep -q -- "$o" "$T"/help || fail "pitr-agent $args does not mention $o"
    done
    grep -q -- "archive-wal\|--target-name" "$T"/help && fail "pitr-agent $args has the general help in it"
done
"$AGENT" --help >"$T"/help || fail "pitr-agent --help did not exit 0"
for verb in backup restore archive-wal restore-wal wal-check "serve --help"; do
    grep -q "pitr-agent.* $verb" "$T"/help || fail "pitr-agent --help does not mention '$verb'"
done
"$AGENT" restore --help | cmp - "$T"/help || fail "pitr-agent restore --help is not the general help"

note "a key file that does not unlock the repository"
init_repo "$T"/repo
init_repo "$T"/other
"$SNAP" -r "$T"/other key export "$T"/other.key 2>/dev/null || fail "key export failed"
echo "not a key" >"$T"/junk.key
# expect_key_refused EXIT REASON PROGRAM ARGS...: that exit status, and on standard error the
# reason, then "the key file ... does not unlock ...", and nothing else.
expect_key_refused() {
    local want=$1 reason=$2 key=$3 prog=$4 name
    shift 4
    name=$(basename "$prog")
    expect_exit "$want" "$prog" "$@"
    diff <(printf '%s: error: %s\n%s: error: the key file "%s" does not unlock repository "%s"\n' \
        "$name" "$reason" "$name" "$key" "$T/repo") "$T"/stderr ||
        fail "$name $*: not the messages expected for a key file that does not fit"
}
OTHER_REASON="key file \"$T/other.key\" belongs to another repository"
JUNK_REASON="\"$T/junk.key\" is not a pitrfs key file"
expect_key_refused 2 "$OTHER_REASON" "$T"/other.key "$SNAP" -r "$T"/repo --key-file "$T"/other.key list
expect_key_refused 2 "$JUNK_REASON" "$T"/junk.key "$SNAP" -r "$T"/repo --key-file "$T"/junk.key list
(
    export PITR_KEY_FILE=$T/other.key # before PITR_PASSPHRASE
    expect_key_refused 2 "$OTHER_REASON" "$T"/other.key "$SNAP" -r "$T"/repo list
)
expect_key_refused 2 "$OTHER_REASON" "$T"/other.key "$AGENT" -r "$T"/repo --key-file "$T"/other.key wal-check
expect_key_refused 130 "$OTHER_REASON" "$T"/other.key \
    "$AGENT" -r "$T"/repo --key-file "$T"/other.key restore-wal 000000010000000000000001 "$T"/seg
[[ ! -e $T/seg ]] || fail "restore-wal with the wrong key file wrote its target"
mkdir "$T"/mnt
expect_key_refused 2 "$OTHER_REASON" "$T"/other.key "$MOUNT" "$T"/repo "$T"/mnt -o keyfile="$T"/other.key
! mountpoint -q "$T"/mnt || { fusermount3 -u "$T"/mnt; fail "a key file of another repository mounted it"; }

note "config check names an agent that cannot be reached once"
PORT=$(free_port 22600)
APORT=$(free_port $((PORT + 1))) # reserved, and nothing listens on it
pg_init "$T"/pg "$PORT"
pg_start "$T"/pg "$T"/pg.log
touch "$T"/ca.crt "$T"/client.crt "$T"/client.key
cat >"$T"/pitr.yaml <<EOF
cluster: test
repository: { location: $T/repo }
tls: { ca: ca.crt, cert: client.crt, key: client.key }
nodes:
  - { name: coord, role: coordinator, conninfo: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres", agent: "127.0.0.1:$APORT" }
EOF
expect_exit 6 "$SNAP" -c "$T"/pitr.yaml config check >"$T"/check.out
cat "$T"/check.out
grep -q "^coord  *postgres reachable  *agent UNREACHABLE  *agent 127.0.0.1:$APORT is not reachable" "$T"/check.out ||
    fail "config check does not say that the agent of coord is not reachable"
grep -q "node coord: agent 127.0.0.1:$APORT is not reachable" "$T"/stderr ||
    fail "config check does not log that the agent of coord is not reachable"
while IFS= read -r line; do
    n=$(grep -o "127.0.0.1:$APORT" <<<"$line" | wc -l)
    ((n <= 1)) || fail "config check names the agent's address $n times in: $line"
done < <(cat "$T"/check.out "$T"/stderr)
echo "ok"
