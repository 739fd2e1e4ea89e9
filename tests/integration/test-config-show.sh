#!/usr/bin/env bash
# `config show` prints valid JSON, with --json or without, when the configuration holds text
# that is not UTF-8: a conninfo URI whose %XX escapes decode to such bytes is shown with its
# escapes as written (its password still masked), a configuration file in a directory whose
# name is not UTF-8 is shown with those bytes as \xHH. It never exits without a message.
. "$(dirname "$0")/lib.sh"

# check_shown OUTPUT CONNINFO-INDEX EXPECTED-CONNINFO [EXPECTED-PATH]
check_shown() {
    python3 - "$@" <<'PY' || fail "config show printed $(cat "$1")"
import json, sys
out, index, conninfo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
shown = json.load(open(out, encoding="utf-8"))  # strict UTF-8: fails on a raw 0xFF byte
assert shown["nodes"][index]["conninfo"] == conninfo, shown["nodes"][index]["conninfo"]
if len(sys.argv) > 4:
    assert shown["path"] == sys.argv[4], shown["path"]
assert "secret" not in open(out, encoding="utf-8").read(), "a password is shown"
PY
}

note "a conninfo URI that decodes to bytes that are not UTF-8"
cat >"$T"/pitr.yaml <<EOF
cluster: t
repository:
  location: $T/repo
nodes:
  - { name: coord, role: coordinator, conninfo: "postgresql://u%FF:s%FEsecret@db.example/app%C3%A9?sslmode=disable", agent: "127.0.0.1:1" }
  - { name: w1, role: worker, conninfo: "host=db.example user=é password=secret", agent: "127.0.0.1:2" }
EOF
for json in "" --json; do
    "$SNAP" -c "$T"/pitr.yaml $json config show >"$T"/show.json 2>"$T"/stderr ||
        { cat "$T"/stderr; fail "config show $json failed"; }
    [[ ! -s $T/stderr ]] || fail "config show $json printed on stderr: $(cat "$T"/stderr)"
    check_shown "$T"/show.json 0 "user=u%FF password=******** dbname=app%C3%A9 host=db.example sslmode=disable"
    check_shown "$T"/show.json 1 "user=é password=******** host=db.example"
done

note "a configuration file whose path is not UTF-8"
dir=$T/$'conf\xff'
mkdir "$dir"
sed 's/u%FF/u/' "$T"/pitr.yaml >"$dir"/pitr.yaml
"$SNAP" -c "$dir"/pitr.yaml --json config show >"$T"/show.json 2>"$T"/stderr ||
    { cat "$T"/stderr; fail "config show of $dir/pitr.yaml failed"; }
# (The password still decodes to bytes that are not UTF-8, but it is masked: what is shown is
# text, so the values are shown decoded.)
check_shown "$T"/show.json 0 "user=u password=******** dbname=appé host=db.example sslmode=disable" \
    "$T/conf\\xFF/pitr.yaml"

note "every failure says why"
rc=0
"$SNAP" config show >/dev/null 2>"$T"/stderr || rc=$?
[[ $rc -eq 64 && -s $T/stderr ]] || fail "config show without a configuration: exit $rc, message '$(cat "$T"/stderr)'"
echo "config show ok"
