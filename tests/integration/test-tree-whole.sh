#!/usr/bin/env bash
# Trees kept whole: hard links (several groups, links across directories, a symlink and a fifo
# with two names, a linked file changed and a link added between two stores), extended
# attributes in user., trusted. and security., ACLs (access and default, set with setfacl), and
# sparse files (truncate, dd seek) come back from restore as they were in the source, and show
# through the mount: one inode per link group with its link count, getfattr and getfacl as in
# the source, ACLs enforced, st_blocks and SEEK_DATA/SEEK_HOLE as in the source; setfattr
# there fails with EROFS. A restore as another user than root skips trusted.* and security.* with a warning,
# and attributes a file system refuses (ramfs) are warnings naming the file, not errors. Needs
# root and /dev/fuse: fails, never skips, without them.
. "$(dirname "$0")/lib.sh"
require getfattr setfattr getfacl setfacl stat du truncate dd fusermount3 mountpoint setpriv mkfifo
MOUNT="$PITR_BIN/mount.pitrfs"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
[[ $(id -u) -eq 0 ]] || fail "this test sets trusted.* and security.* attributes: run it as root"

REPO=$T/repo
SRC=$T/src
MOUNTS=() PIDS=()
unmount_all() {
    local m p
    for m in "${MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" ||
            umount -l "$m"; }
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    return 0
}
cleanup_hooks+=(unmount_all)
mount_fg() { # DIR [options]
    local mnt=$1 i log="$T/mount-${#MOUNTS[@]}.log"
    shift
    mkdir -p "$mnt"
    MOUNTS+=("$mnt")
    "$MOUNT" "$REPO" "$mnt" --foreground "$@" 2>"$log" &
    PIDS+=($!)
    for i in $(seq 100); do
        mountpoint -q "$mnt" && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || fail "mount.pitrfs exited: $(cat "$log")"
        sleep 0.1
    done
    fail "$mnt is not mounted after 10 s: $(cat "$log")"
}

# ---- what is compared ----

# Every non-directory with its link count and the names of its inode, with inode numbers
# replaced by the group's first name: equal output means the same link groups.
link_groups() {
    (cd "$1" && find . -mindepth 1 ! -type d -exec stat -c '%h %i %n' {} +) | python3 -c '
import sys, collections
rows = [l.rstrip("\n").split(" ", 2) for l in sys.stdin]
groups = collections.defaultdict(list)
for nlink, ino, name in rows:
    groups[ino].append(name)
for nlink, ino, name in sorted(rows, key=lambda r: r[2]):
    print(name, nlink, ",".join(sorted(groups[ino])))'
}
# getfattr/getfacl -R output as blocks per file, sorted, with the root's name made neutral.
sorted_blocks() {
    python3 -c '
import sys
blocks, cur = [], []
for line in sys.stdin.read().splitlines():
    if line.startswith("# file: "):
        if cur:
            blocks.append(cur)
        cur = [line]
    elif line:
        cur.append(line)
if cur:
    blocks.append(cur)
for b in sorted(blocks):
    print("\n".join([b[0]] + sorted(b[1:])))'
}
xattrs_of() { (cd "$1" && getfattr -h -P -R -d -m - -e hex .) | sorted_blocks; }
acls_of() { (cd "$1" && getfacl -R -P .) 2>/dev/null | sorted_blocks; }
# Each regular file's size, 512-byte blocks and its data extents found by SEEK_DATA/SEEK_HOLE.
sparse_map() {
    (cd "$1" && find . -type f -name 'sparse*' | sort | while read -r f; do
        echo "$f $(stat -c '%s %b' "$f") $(python3 - "$f" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
extents, pos = [], 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    extents.append(f"{data}-{hole}")
    pos = hole
print(" ".join(extents) or "no-data")
PY
)"
    done)
}
assert_same() { # what, command, dir1, dir2
    local what=$1 cmd=$2
    diff <($cmd "$3") <($cmd "$4") >"$T/diff" || { cat "$T/diff"; fail "$what of $3 and $4 differ"; }
}
# Entries as assert_same_entries sees them, but a directory's size left out: the mount shows
# the size of the stored directory object there.
entries_of() {
    tree_manifest "$1"
    (cd "$1" && find . -mindepth 1 \( -type d -printf '%p %y %m %U %G %T@\n' \) -o \
        \( ! -type d -printf '%p %y %m %U %G %T@ %s %l\n' \) | sort)
}
assert_whole() { # source, copy
    assert_same "entries" entries_of "$1" "$2"
    assert_same "link groups" link_groups "$1" "$2"
    assert_same "extended attributes" xattrs_of "$1" "$2"
    assert_same "ACLs" acls_of "$1" "$2"
    assert_same "sparse files" sparse_map "$1" "$2"
}

# ---- the source ----

init_repo "$REPO"
note "building the source tree"
mkdir -p "$SRC"/d1/sub "$SRC"/d2 "$SRC"/shared "$SRC"/acl-dir
head -c 70000 /dev/urandom >"$SRC"/d1/big
ln "$SRC"/d1/big "$SRC"/d2/big-link
ln "$SRC"/d1/big "$SRC"/d1/sub/big-link2            # three names in three directories
echo "version one" >"$SRC"/shared/changing
ln "$SRC"/shared/changing "$SRC"/d2/changing-link    # changed between the two stores
printf 'small\n' >"$SRC"/d1/pair
ln "$SRC"/d1/pair "$SRC"/pair-top
ln -s d1/big "$SRC"/sym
ln -P "$SRC"/sym "$SRC"/d2/sym-hard                  # a symlink with two names
mkfifo "$SRC"/fifo
ln "$SRC"/fifo "$SRC"/d1/fifo-hard
echo "alone" >"$SRC"/alone
setfattr -n user.color -v blue "$SRC"/d1/big
setfattr -n user.binary -v 0x00ff00017f "$SRC"/d1/pair
setfattr -n user.empty "$SRC"/alone
setfattr -n user.large -v "0x$(head -c 3000 /dev/urandom | od -An -tx1 -v | tr -d ' \n')" "$SRC"/alone
setfattr -n trusted.pitr -v "trusted value" "$SRC"/shared/changing
setfattr -n security.pitr -v "security value" "$SRC"/shared/changing
setfattr -h -n trusted.on-symlink -v l "$SRC"/sym
setfattr -n user.dir -v d "$SRC"/d2
setfattr -n user.top -v t "$SRC"                     # the stored directory itself
echo "read-only" >"$SRC"/read-only
setfattr -n user.ro -v r "$SRC"/read-only
chmod 0444 "$SRC"/read-only
setfacl -m u:nobody:rw,g:nogroup:r "$SRC"/d1/pair
setfacl -m u:nobody:rx "$SRC"/acl-dir
echo "for nobody's eyes" >"$SRC"/acl-secret
chmod 0600 "$SRC"/acl-secret
cp -p "$SRC"/acl-secret "$SRC"/secret                  # the same without the ACL
setfacl -m u:nobody:r "$SRC"/acl-secret               # mode 0640: only the ACL lets nobody read
setfacl -d -m u:nobody:rwx,o::- "$SRC"/acl-dir        # a default ACL: inherited by what follows
mkdir "$SRC"/acl-dir/inner
echo "inherits" >"$SRC"/acl-dir/inner/file
truncate -s 20M "$SRC"/sparse-middle
dd if=/dev/urandom of="$SRC"/sparse-middle bs=4k seek=1000 count=3 conv=notrunc status=none
dd if=/dev/urandom of="$SRC"/sparse-middle bs=4k seek=3000 count=1 conv=notrunc status=none
truncate -s 8M "$SRC"/sparse-empty                   # all hole
dd if=/dev/urandom of="$SRC"/sparse-tail bs=4k count=2 status=none
truncate -s 5M "$SRC"/sparse-tail                    # data, then a hole to the end
ln "$SRC"/sparse-middle "$SRC"/d2/sparse-linked      # a sparse file with two names
[[ $(stat -c %b "$SRC"/sparse-middle) -lt 100 ]] || fail "sanity: $SRC/sparse-middle is not sparse"
[[ $(getfattr --absolute-names -n trusted.pitr --only-values "$SRC"/shared/changing) == "trusted value" ]] ||
    fail "sanity: trusted.* could not be set on the source"
getfacl -P "$SRC"/acl-dir/inner/file 2>/dev/null | grep -q '^user:nobody:' ||
    fail "sanity: the default ACL was not inherited"
cp -a "$SRC" "$T"/src1                                # the source as the first store sees it

note "store, restore"
out=$("$SNAP" -r "$REPO" store "$SRC" --name whole --json) || fail "store failed"
ID1=$(json_get id <<<"$out")
"$SNAP" -r "$REPO" restore "$ID1" "$T"/r1 >/dev/null || fail "restore of $ID1 failed"
assert_whole "$SRC" "$T"/r1
[[ $(stat -c %b "$T"/r1/sparse-middle) -eq $(stat -c %b "$SRC"/sparse-middle) ]] ||
    fail "the restored sparse file takes $(stat -c %b "$T"/r1/sparse-middle) blocks"
[[ $(du -sk "$T"/r1 | cut -f1) -eq $(du -sk "$SRC" | cut -f1) ]] ||
    fail "du: the restore takes $(du -sk "$T"/r1 | cut -f1) KiB, the source $(du -sk "$SRC" | cut -f1) KiB"

note "a linked file changes, a link is added, and the tree is stored again"
echo "version two, longer" >>"$SRC"/d2/changing-link
ln "$SRC"/d1/pair "$SRC"/d2/pair-third
setfattr -n user.later -v 2 "$SRC"/d1/big
ID2=$(store_id "$REPO" "$SRC" --name whole)
"$SNAP" -r "$REPO" restore "$ID2" "$T"/r2 >/dev/null || fail "restore of $ID2 failed"
assert_whole "$SRC" "$T"/r2
grep -q "version two" "$T"/r2/shared/changing || fail "the second snapshot has the old content"
"$SNAP" -r "$REPO" restore "$ID1" "$T"/r1b >/dev/null || fail "second restore of $ID1 failed"
assert_whole "$T"/src1 "$T"/r1b
grep -q "version two" "$T"/r1b/d2/changing-link && fail "the first snapshot shows the change"

note "through the mount"
chmod o+x "$T" # other users reach the mount (and, later, their restore target)
MNT=$T/mnt
mount_fg "$MNT" -o allow_other
for pair in "$ID1:$T/src1" "$ID2:$SRC"; do
    id=${pair%%:*} src=${pair#*:}
    assert_whole "$src" "$MNT/snapshots/$id"
done
# The same names are other inodes in the other snapshot (its content differs).
i1=$(stat -c %i "$MNT/snapshots/$ID1/shared/changing")
i2=$(stat -c %i "$MNT/snapshots/$ID2/shared/changing")
[[ $i1 != "$i2" ]] || fail "one inode for a linked file in two snapshots"
[[ $(stat -c %i "$MNT/snapshots/$ID2/d2/changing-link") == "$i2" ]] || fail "a link is not its inode"
[[ $(stat -c %h "$MNT/snapshots/$ID1/d1/pair") -eq 2 && $(stat -c %h "$MNT/snapshots/$ID2/d1/pair") -eq 3 ]] ||
    fail "link counts of d1/pair through the mount: $(stat -c %h "$MNT/snapshots/$ID1/d1/pair") and $(stat -c %h "$MNT/snapshots/$ID2/d1/pair"), not 2 and 3"
[[ $(getfattr --absolute-names -n user.top --only-values "$MNT/snapshots/$ID2") == t ]] ||
    fail "the snapshot's root has not the stored directory's attributes"
# ls -i (readdir) and stat (lookup) agree.
ls_ino=$(ls -i "$MNT/snapshots/$ID2/d2" | awk '$2 == "big-link" {print $1}')
[[ $ls_ino == "$(stat -c %i "$MNT/snapshots/$ID2/d1/big")" ]] || fail "ls -i and stat disagree on a link"
cmp "$MNT/snapshots/$ID2/sparse-middle" "$SRC"/sparse-middle || fail "the sparse file reads wrong"
# The kernel enforces the stored ACLs: nobody reads the file its ACL lets it read, not the other.
as_nobody() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"; }
for dir in "$SRC" "$MNT/snapshots/$ID2"; do
    [[ $(as_nobody cat "$dir"/acl-secret) == "for nobody's eyes" ]] ||
        fail "nobody cannot read $dir/acl-secret, which its ACL allows"
    as_nobody cat "$dir"/secret >/dev/null 2>&1 && fail "nobody reads $dir/secret (mode 0600)"
done
rc=0
setfattr -n user.x -v 1 "$MNT/snapshots/$ID2/alone" 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] && grep -q "Read-only file system" "$T"/stderr || fail "setfattr on the mount: $(cat "$T"/stderr)"
rc=0
setfattr -x user.empty "$MNT/snapshots/$ID2/alone" 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] && grep -q "Read-only file system" "$T"/stderr || fail "setfattr -x on the mount: $(cat "$T"/stderr)"
rc=0
setfacl -m u:nobody:r "$MNT/snapshots/$ID2/alone" 2>"$T"/stderr || rc=$?
[[ $rc -ne 0 ]] || fail "setfacl on the mount succeeded"
# cp -a out of the mount keeps attributes, ACLs, links (it sees one inode) and holes.
cp -a "$MNT/snapshots/$ID2" "$T"/copied || fail "cp -a from the mount failed"
assert_same "extended attributes" xattrs_of "$SRC" "$T"/copied
assert_same "ACLs" acls_of "$SRC" "$T"/copied
assert_same "link groups" link_groups "$SRC" "$T"/copied
assert_same "sparse files" sparse_map "$SRC" "$T"/copied   # cp finds the holes by SEEK_HOLE
fusermount3 -u "$MNT" || fail "unmount failed"

note "restore --force over a copy whose links and attributes drifted"
rm "$T"/r2/d2/pair-third
ln -f "$T"/r2/alone "$T"/r2/d2/big-link                   # now linked to the wrong file
setfattr -x user.color "$T"/r2/d1/big
setfattr -n user.extra -v x "$T"/r2/alone
"$SNAP" -r "$REPO" restore "$ID2" "$T"/r2 --force >/dev/null || fail "restore --force failed"
assert_whole "$SRC" "$T"/r2

note "restored by a user who is not root"
cp -a "$REPO" "$T"/repo-nobody
chown -R nobody "$T"/repo-nobody
mkdir "$T"/r-nobody
chown nobody "$T"/r-nobody
rc=0
as_nobody "$SNAP" -r "$T"/repo-nobody restore "$ID2" "$T"/r-nobody/t >/dev/null 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -eq 0 ]] || fail "restore as nobody exited $rc"
grep -q "trusted. and security." "$T"/stderr && grep -q "only root" "$T"/stderr ||
    fail "restore as nobody does not warn that trusted.* and security.* were skipped"
getfattr --absolute-names -n trusted.pitr "$T"/r-nobody/t/shared/changing >/dev/null 2>&1 && fail "nobody set trusted.*"
[[ $(getfattr --absolute-names -n user.ro --only-values "$T"/r-nobody/t/read-only) == r ]] ||
    fail "user.* of a read-only file was not restored by nobody"
[[ $(getfattr --absolute-names -n user.color --only-values "$T"/r-nobody/t/d2/big-link) == blue ]] ||
    fail "user.* was not restored by nobody"
assert_same "link groups" link_groups "$SRC" "$T"/r-nobody/t
getfacl -P "$T"/r-nobody/t/d1/pair 2>/dev/null | grep -q '^user:nobody:rw-' ||
    fail "the ACL was not restored by nobody"

note "a file system without extended attributes (ramfs): warnings, not errors"
mkdir "$T"/ram
mount -t ramfs ramfs "$T"/ram || fail "cannot mount a ramfs"
MOUNTS+=("$T"/ram)
rc=0
"$SNAP" -r "$REPO" restore "$ID2" "$T"/ram/t >/dev/null 2>"$T"/stderr || rc=$?
[[ $rc -eq 0 ]] || { cat "$T"/stderr; fail "restore into a ramfs exited $rc"; }
grep -q "warning: could not set extended attribute \"user.color\" of \"$T/ram/t/d1/big\"" "$T"/stderr ||
    grep -q "warning: could not set extended attribute \"user.color\" of \"$T/ram/t/d2/big-link\"" "$T"/stderr ||
    grep -q "warning: could not set extended attribute \"user.color\" of \"$T/ram/t/d1/sub/big-link2\"" "$T"/stderr ||
    { cat "$T"/stderr; fail "no warning names the file whose attribute could not be set"; }
grep -q "system.posix_acl_access" "$T"/stderr || fail "no warning for the ACL that could not be set"
assert_same "entries" entries_of "$SRC" "$T"/ram/t
assert_same "link groups" link_groups "$SRC" "$T"/ram/t
umount "$T"/ram

echo "tree-whole ok"
