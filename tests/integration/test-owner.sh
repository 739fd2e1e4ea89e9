#!/usr/bin/env bash
# One repository, several OS users (docs/OPERATIONS.md 8.3), with real processes: a repository
# made by postgres with `init --group`; PostgreSQL's archive_command and the agent as postgres;
# `store`, a cluster `create` and `delete` as root; `list`, `restore` and the mount as postgres
# and as root; a second user in the group reads and adds a snapshot; a user outside the group is
# refused, told by name which object and whom the repository belongs to. Every file and
# directory of the repository is then checked with stat: the owner is postgres (or the member
# who wrote it), the group is the repository's, and the mode is the one of its kind. Root also
# hands back the index and lock files an older version left it owning. Last, a repository
# without a group works as before, owner only (0600/0700), for root and postgres alike.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
require groupadd groupdel gpasswd getent setpriv stat fusermount3 mountpoint
AGENT=$PITR_BIN/pitr-agent
MOUNT=$PITR_BIN/mount.pitrfs

# The test's group, postgres a member of it as `usermod -aG` would make it (deleting the group
# at the end removes the membership too).
GROUP=pitr-test-owner
getent group "$GROUP" >/dev/null || groupadd "$GROUP" || fail "groupadd $GROUP failed"
cleanup_hooks+=("groupdel $GROUP")
gpasswd -a postgres "$GROUP" >/dev/null || fail "could not add postgres to $GROUP"
GID=$(getent group "$GROUP" | cut -d: -f3)
# A second member of the group, and a user outside it (numeric ids: nothing to create).
MEMBER_UID=47211
getent passwd "$MEMBER_UID" >/dev/null && fail "uid $MEMBER_UID is taken: pick another for the test"
as_member() { setpriv --reuid="$MEMBER_UID" --regid="$MEMBER_UID" --groups="$GID" "$@"; }
as_outsider() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
# Everyone may pass through $T to the repositories; the repositories decide.
chmod 0711 "$T"
# Users mount with FUSE where /dev/fuse is 0666, as Debian's udev makes it; a container may
# have it 0600. Made so for the test, put back after.
FUSE_MODE=$(stat -c %a /dev/fuse) || fail "no /dev/fuse"
if [[ $FUSE_MODE != 666 ]]; then
    chmod 0666 /dev/fuse || fail "could not make /dev/fuse usable by users"
    cleanup_hooks+=("chmod $FUSE_MODE /dev/fuse")
fi

REPO=$T/repo
# The owner, group and mode of a repository entry: "postgres pitr-test-owner 2750".
meta() { stat -c '%U %G %a' "$1"; }

note "init as postgres with --group: the layout and its modes"
as_pg "$SNAP" -r "$REPO" init --scrypt-n 1024 --group "$GROUP" 2>"$T"/stderr ||
    { cat "$T"/stderr; fail "init --group as postgres failed"; }
grep -q warning "$T"/stderr && fail "init warned although postgres is in the group: $(cat "$T"/stderr)"
assert_eq "$(meta "$REPO")" "postgres $GROUP 2750" "the repository directory"
assert_eq "$(meta "$REPO"/keys)" "postgres $GROUP 2750" "keys/"
for d in packs snapshots locks tmp index wal; do
    assert_eq "$(meta "$REPO/$d")" "postgres $GROUP 2770" "$d/"
done
for f in config keys/passphrase; do
    assert_eq "$(meta "$REPO/$f")" "postgres $GROUP 640" "$f"
done

note "the first command is root's: store; the index, the lock file and what it wrote are postgres's"
mkdir -p "$T"/src/sub
echo "stored by root" >"$T"/src/sub/file
random_file "$T"/src/data 1
chmod -R a+rX "$T"/src
[[ -z $(ls "$REPO"/index) ]] || fail "sanity: the index exists before root's first command"
ROOT_ID=$(store_id "$REPO" "$T"/src --name by-root)
for f in index/data.mdb index/lock.mdb locks/repository; do
    assert_eq "$(meta "$REPO/$f")" "postgres $GROUP 660" "$f made by root"
done
assert_eq "$(meta "$REPO/snapshots/$ROOT_ID")" "postgres $GROUP 640" "snapshot record made by root"
find "$REPO"/packs -mindepth 1 | while read -r p; do
    want="postgres $GROUP 640"; [[ -d $p ]] && want="postgres $GROUP 2770"
    assert_eq "$(meta "$p")" "$want" "${p#"$REPO"/} made by root"
done

note "PostgreSQL archives WAL and the agent serves, both as postgres"
as_pg "$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export as postgres failed"
PORT=$(free_port 22600)
APORT=$(free_port $((PORT + 1)))
CONN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
pg_init "$T"/n1 "$PORT" "$AGENT -q -r $REPO --key-file $T/repo.key -n n1 archive-wal %p %f"
pg_start "$T"/n1 "$T"/n1.log
psql_at "$PORT" -c "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g" \
    -c "SELECT pg_switch_wal()" >/dev/null
archived() { compgen -G "$REPO/wal/n1/00000001/0000000100000000000000*" >/dev/null; }
wait_until 60 archived || { tail -20 "$T"/n1.log >&2; fail "archive_command archived nothing"; }
make_pki "$T"/pki >/dev/null
chown -R postgres: "$T"/pki
setpriv --reuid=postgres --regid=postgres --init-groups \
    env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n n1 -d "$CONN" -D "$T"/n1 \
    serve --listen "127.0.0.1:$APORT" --tls-cert "$T"/pki/server.crt --tls-key "$T"/pki/server.key \
    --tls-ca "$T"/pki/ca.crt --pg-log "$T"/n1.log >"$T"/agent.log 2>&1 &
AGENT_PID=$!
cleanup_hooks+=("kill $AGENT_PID 2>/dev/null")
serving() { grep -q 'serving on' "$T"/agent.log; }
wait_until 10 serving || { cat "$T"/agent.log >&2; fail "the agent did not start"; }
cat >"$T"/pitr.yaml <<EOF
cluster: owner
repository: { location: $REPO, key_file: $T/repo.key }
barrier: { adapter: plain }
tls: { ca: pki/ca.crt, cert: pki/client.crt, key: pki/client.key }
nodes:
  - { name: n1, role: coordinator, conninfo: "$CONN", agent: "127.0.0.1:$APORT", pgdata: $T/n1 }
EOF

note "create as root: a cluster snapshot beside the agent's base backup"
"$SNAP" -c "$T"/pitr.yaml barrier-sql | sed -n '1,/^$/p' | psql_at "$PORT" >/dev/null ||
    fail "the barrier's setup SQL failed"
"$SNAP" -c "$T"/pitr.yaml create --label by-root-create >"$T"/create.out 2>&1 ||
    { cat "$T"/create.out; fail "create as root failed"; }
assert_eq "$(meta "$REPO"/locks/cluster)" "postgres $GROUP 660" "locks/cluster made by root"
[[ -e $REPO/locks/cluster.holder ]] && fail "create left locks/cluster.holder"
as_pg "$SNAP" -r "$REPO" list --json >"$T"/list.json || fail "list --json as postgres failed"
snapshot_of_kind() {
    python3 -c 'import json, sys; print(next(s["id"] for s in json.load(open(sys.argv[1])) if s["kind"] == sys.argv[2]))' \
        "$T"/list.json "$1" || fail "postgres does not list a snapshot of kind $1"
}
CLUSTER_ID=$(snapshot_of_kind cluster)
BASE_ID=$(snapshot_of_kind pgbase)
assert_eq "$(meta "$REPO/snapshots/$CLUSTER_ID")" "postgres $GROUP 640" "cluster record made by root"

note "list, restore and the mount, as postgres and as root"
for who in postgres root; do
    run=(); [[ $who == postgres ]] && run=(runuser -u postgres --)
    out=$T/restore-$who
    mkdir "$out" && chown "$who": "$out"
    "${run[@]}" "$SNAP" -r "$REPO" list >"$T"/list.out 2>"$T"/stderr || { cat "$T"/stderr; fail "list as $who failed"; }
    grep -q "^$ROOT_ID .*by-root" "$T"/list.out || fail "list as $who does not show $ROOT_ID"
    "${run[@]}" "$SNAP" -r "$REPO" restore "$ROOT_ID" "$out"/tree 2>"$T"/stderr ||
        { cat "$T"/stderr; fail "restore as $who failed"; }
    diff <(tree_manifest "$T"/src) <(tree_manifest "$out"/tree) || fail "restore as $who restored other bytes"
    mnt=$T/mnt-$who
    mkdir "$mnt" && chown "$who": "$mnt"
    cleanup_hooks+=("fusermount3 -uz '$mnt' 2>/dev/null") # root may not even stat postgres's mount
    "${run[@]}" "$MOUNT" "$REPO" "$mnt" -o keyfile="$T"/repo.key 2>"$T"/stderr ||
        { cat "$T"/stderr; fail "mount as $who failed"; }
    # Read as the user who mounted: without allow_other, nobody else can.
    "${run[@]}" cmp "$T"/src/data "$mnt/snapshots/$ROOT_ID/data" || fail "the mount as $who shows other bytes"
    "${run[@]}" test -d "$mnt/snapshots/$CLUSTER_ID/n1" || fail "the mount as $who does not show the cluster snapshot"
    [[ $("${run[@]}" cat "$mnt/snapshots/$BASE_ID/pgdata/PG_VERSION") == 15 ]] ||
        fail "the mount as $who does not show the base backup the agent made"
    [[ -n $("${run[@]}" ls "$mnt"/wal/n1/00000001) ]] || fail "the mount as $who shows no archived WAL"
    "${run[@]}" fusermount3 -u "$mnt" || fail "unmount as $who failed"
done

note "a member of the group reads, and adds a snapshot postgres reads"
as_member "$SNAP" -r "$REPO" list >"$T"/list.out 2>"$T"/stderr || { cat "$T"/stderr; fail "list as a member failed"; }
grep -q "^$CLUSTER_ID " "$T"/list.out || fail "a member does not list the cluster snapshot"
mkdir "$T"/member && chown "$MEMBER_UID" "$T"/member
as_member "$SNAP" -r "$REPO" restore "$ROOT_ID" "$T"/member/tree 2>"$T"/stderr ||
    { cat "$T"/stderr; fail "restore as a member failed"; }
cmp "$T"/src/data "$T"/member/tree/data || fail "restore as a member restored other bytes"
echo "a member's own data" >"$T"/member/own
MEMBER_ID=$(as_member "$SNAP" -r "$REPO" store --stdin --name by-member --json <"$T"/member/own | json_get id) ||
    fail "store as a member failed"
assert_eq "$(stat -c '%u %G %a' "$REPO/snapshots/$MEMBER_ID")" "$MEMBER_UID $GROUP 640" "the member's snapshot record"
[[ $(as_pg "$SNAP" -r "$REPO" cat "$MEMBER_ID") == "a member's own data" ]] ||
    fail "postgres does not read the member's snapshot"

note "a user outside the group is refused by name"
for cmd in list "restore $ROOT_ID $T/outsider" "cat $MEMBER_ID"; do
    # shellcheck disable=SC2086
    expect_exit 1 as_outsider "$SNAP" -r "$REPO" $cmd
    grep -q "permission denied reading \"config\" of repository \"$REPO\"" "$T"/stderr ||
        fail "'$cmd' outside the group does not say what it may not read"
    grep -q "HINT: the repository belongs to postgres:$GROUP: run as postgres, as root or as a member of group $GROUP" "$T"/stderr ||
        fail "'$cmd' outside the group does not say whom the repository belongs to"
done
mkdir "$T"/mnt-outsider && chown nobody "$T"/mnt-outsider
cleanup_hooks+=("mountpoint -q '$T/mnt-outsider' && fusermount3 -uz '$T/mnt-outsider'")
expect_exit 1 as_outsider "$MOUNT" "$REPO" "$T"/mnt-outsider
grep -q "HINT: the repository belongs to postgres:$GROUP" "$T"/stderr ||
    fail "the mount outside the group does not say whom the repository belongs to"
mountpoint -q "$T"/mnt-outsider && fail "a user outside the group mounted the repository"
# A member who cannot read one object (its mode taken away) is told which.
chmod 0600 "$REPO/snapshots/$ROOT_ID"
expect_exit 1 as_member "$SNAP" -r "$REPO" show "$ROOT_ID"
grep -q "permission denied reading \"snapshots/$ROOT_ID\" of repository \"$REPO\" (\"snapshots/$ROOT_ID\" is postgres:$GROUP, mode 0600; this is user $MEMBER_UID)" "$T"/stderr ||
    fail "an unreadable record is not named with its owner and mode"
chmod 0640 "$REPO/snapshots/$ROOT_ID"

note "delete as root; postgres sees it gone"
"$SNAP" -r "$REPO" delete "$MEMBER_ID" 2>/dev/null || fail "delete as root failed"
as_pg "$SNAP" -r "$REPO" list >"$T"/list.out || fail "list as postgres after the delete failed"
grep -q "^$MEMBER_ID " "$T"/list.out && fail "the deleted snapshot is still listed"

note "root hands back what an older version left it owning"
chown root: "$REPO"/index "$REPO"/index/*.mdb "$REPO"/locks/repository
chmod 0600 "$REPO"/index/*.mdb "$REPO"/locks/repository
store_id "$REPO" "$T"/src --name by-root-again >/dev/null
assert_eq "$(meta "$REPO"/index)" "postgres $GROUP 2770" "index/ after root opened it"
for f in index/data.mdb index/lock.mdb locks/repository; do
    assert_eq "$(meta "$REPO/$f")" "postgres $GROUP 660" "$f after root opened it"
done

note "postgres archives again after all of root's work"
before=$(find "$REPO"/wal -type f | wc -l)
psql_at "$PORT" -c "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g" -c "SELECT pg_switch_wal()" >/dev/null
more_archived() { (($(find "$REPO"/wal -type f | wc -l) > before)); }
wait_until 60 more_archived || { tail -20 "$T"/n1.log >&2; fail "archiving stopped after root's commands"; }

note "every entry of the repository: owner, group and mode of its kind"
kill "$AGENT_PID"
pg_stop "$T"/n1
python3 - "$REPO" "$GROUP" "$MEMBER_UID" <<'PY' || fail "entries of the repository with the wrong owner, group or mode"
import grp, os, pwd, stat, sys
repo, group, member = sys.argv[1], sys.argv[2], int(sys.argv[3])
gid, pg = grp.getgrnam(group).gr_gid, pwd.getpwnam("postgres").pw_uid
bad, n = [], 0
for top, dirs, files in os.walk(repo):
    for name in dirs + files:
        p = os.path.join(top, name)
        rel = os.path.relpath(p, repo)
        st = os.lstat(p)
        n += 1
        mode = stat.S_IMODE(st.st_mode)
        if name.startswith("."):
            bad.append(f"{rel}: a temporary name left behind")
        if stat.S_ISDIR(st.st_mode):
            want = 0o2750 if rel == "keys" else 0o2770
        elif rel.startswith("index/") or (rel.startswith("locks/") and not rel.endswith(".holder")):
            want = 0o660
        else:
            want = 0o640
        if st.st_uid not in (pg, member) or (st.st_uid == member and not rel.startswith(("packs/", "snapshots/"))):
            bad.append(f"{rel}: owner {st.st_uid}")
        if st.st_gid != gid:
            bad.append(f"{rel}: group {st.st_gid}")
        if mode != want:
            bad.append(f"{rel}: mode {mode:o}, not {want:o}")
print(f"{n} entries checked")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY

note "a repository without a group: the owner alone, as before"
PLAIN=$T/plain
as_pg "$SNAP" -r "$PLAIN" init --scrypt-n 1024 >/dev/null 2>&1 || fail "init without a group failed"
PLAIN_ID=$(store_id "$PLAIN" "$T"/src --name plain-by-root)
as_pg "$SNAP" -r "$PLAIN" list >"$T"/list.out || fail "postgres does not list the repository root wrote to"
grep -q "^$PLAIN_ID " "$T"/list.out || fail "postgres does not see root's snapshot"
as_pg "$SNAP" -r "$PLAIN" restore "$PLAIN_ID" "$T"/restore-postgres/plain 2>/dev/null ||
    fail "postgres could not restore root's snapshot"
cmp "$T"/src/data "$T"/restore-postgres/plain/data || fail "postgres restored other bytes"
as_pg "$SNAP" -r "$PLAIN" store "$T"/src --name plain-by-postgres >/dev/null 2>&1 ||
    fail "postgres could not store after root"
bad=$(find "$PLAIN" \( ! -user postgres -o \( -type d ! -perm 0700 \) -o \( -type f ! -perm 0600 \) \) -printf '%p %u %m\n')
[[ -z $bad ]] || fail "entries of the repository without a group that are not postgres's 0600/0700: $bad"
expect_exit 1 as_member "$SNAP" -r "$PLAIN" list
grep -q "HINT: the repository belongs to postgres and is shared with no group" "$T"/stderr ||
    fail "a user refused a repository without a group is not told why"
echo "owner ok"
