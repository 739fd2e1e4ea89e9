#!/usr/bin/env bash
# Mounting and unmounting mount.pitrfs: a wrong passphrase exits 2 with nothing mounted (also in
# the background, the default); other failures get their exit codes; mount(8)'s helper flags
# (-f fake mounts nothing, -s sloppy, -n, -v, -t), a double-quoted context= with a comma, an
# unknown option named with a one-line hint, passphrase_file=<(...) (a pipe); mount(8) and fstab
# run this build's mount.pitrfs as their helper with -o passphrase_file=, whatever is installed in
# /sbin, which the test never touches; umount, SIGTERM, unmount of a busy mount, and
# kill -9 of the daemon followed by fusermount3 -u all end without hanging or leaving a mount.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint mount umount timeout unshare findmnt
MOUNT="$PITR_BIN/mount.pitrfs"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
[[ $(id -u) -eq 0 ]] || fail "mount(8) and umount(8) need root: run this test as root"

REPO=$T/repo
MNT=$T/mnt
mkdir -p "$MNT"
READER_PID=
cleanup() {
    [[ -n $READER_PID ]] && kill "$READER_PID" 2>/dev/null
    mountpoint -q "$MNT" 2>/dev/null && { fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"; }
    return 0
}
cleanup_hooks+=(cleanup)
# Wait until process $1 has exited (at most 10 s); fail with $2 otherwise.
wait_gone() {
    local i
    for i in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    fail "$2"
}
# The pid of the mount.pitrfs serving $MNT (the background daemon has no parent to ask).
daemon_pid() { pgrep -f -- "mount.pitrfs $REPO $MNT" | head -n 1 || true; } # empty: none
not_mounted() { ! mountpoint -q "$MNT" || fail "$1: $MNT is still mounted"; }
# The kernel's read-ahead window on the mount, in KiB; root may raise it (kernel_readahead=).
check_readahead() { # KIB WHAT
    local have
    have=$(cat "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb")
    if [[ $EUID -eq 0 ]]; then
        assert_eq "$have" "$1" "the kernel's read-ahead on $2"
    else
        note "not root: the read-ahead window stays the kernel's ($have KiB) on $2"
    fi
}

init_repo "$REPO"
mkdir -p "$T"/src
random_file "$T"/src/big 32
echo hello >"$T"/src/hello
ID=$(store_id "$REPO" "$T"/src --name src)
printf '%s\n' "$PITR_PASSPHRASE" >"$T"/pass
printf 'not the passphrase\n' >"$T"/wrong-pass

note "7. failures exit with their codes and mount nothing"
PITR_PASSPHRASE=wrong expect_exit 2 "$MOUNT" "$REPO" "$MNT"
grep -q "wrong passphrase" "$T"/stderr || fail "no 'wrong passphrase' message"
not_mounted "wrong passphrase (background)"
PITR_PASSPHRASE=wrong expect_exit 2 "$MOUNT" "$REPO" "$MNT" --foreground
not_mounted "wrong passphrase (foreground)"
expect_exit 2 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -o passphrase_file="$T"/wrong-pass
not_mounted "wrong passphrase file"
expect_exit 3 "$MOUNT" "$T"/src "$MNT"
grep -q "not a pitrfs repository" "$T"/stderr || fail "no 'not a pitrfs repository' message"
expect_exit 1 "$MOUNT" "$REPO" "$T"/no-such-dir
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -o no_such_option
expect_exit 64 "$MOUNT" "$REPO"
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -o cache_size=lots
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -o kernel_readahead=-1
pgrep -f -- "mount.pitrfs $REPO" && fail "a failed mount left a process behind"
not_mounted "after the failures"

note "7. an unknown option is named, with a one-line hint instead of the help"
expect_exit 64 "$MOUNT" "$REPO" "$MNT" --bogus
grep -qx "mount.pitrfs: error: unknown option '--bogus'" "$T"/stderr ||
    fail "the error does not name the option --bogus"
grep -qx "HINT: see mount.pitrfs --help" "$T"/stderr || fail "no hint to --help"
assert_eq "$(wc -l <"$T"/stderr)" 2 "lines said about --bogus"
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -o passphrase_file="$T"/pass -x
grep -q "unknown option '-x'" "$T"/stderr || fail "the error does not name the option -x"
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -t ext4
not_mounted "unknown options"

note "7. -f is mount(8)'s fake mount: everything is checked, nothing is mounted"
# (timeout: a -f that mounted in the foreground would not return)
expect_exit 0 timeout 10 "$MOUNT" "$REPO" "$MNT" -f
not_mounted "-f"
# As mount(8) passes its flags to a helper, after the operands; -v says what happened.
expect_exit 0 timeout 10 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -s -f -n -v \
    -o passphrase_file="$T"/pass,noauto -t pitrfs
grep -q "fake mount (-f)" "$T"/stderr || fail "-f -v did not say that nothing was mounted"
not_mounted "-sfnv"
pgrep -f -- "mount.pitrfs $REPO" && fail "a fake mount left a process behind"
# What a mount would refuse, -f refuses with the same exit codes.
: >"$T"/empty-pass
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -f -o no_such_option
expect_exit 64 "$MOUNT" "$REPO" "$MNT" -f -o cache_size=lots
expect_exit 1 "$MOUNT" "$REPO" "$T"/no-such-dir -f
expect_exit 3 "$MOUNT" "$T"/src "$MNT" -f
expect_exit 1 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -f -o passphrase_file="$T"/no-such-file
expect_exit 2 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -f -o passphrase_file="$T"/empty-pass
grep -q "is empty" "$T"/stderr || fail "no 'is empty' message for an empty passphrase file"
expect_exit 1 "$MOUNT" "$REPO" "$MNT" -f -o keyfile="$T"/no-such-key
not_mounted "fake mounts that fail"

note "7. -s: unknown -o options are ignored with a warning"
expect_exit 0 "$MOUNT" "$REPO" "$MNT" -s -o no_such_option,cache_size=64M
grep -q 'warning: ignoring unknown mount option "no_such_option"' "$T"/stderr ||
    fail "-s did not warn about the unknown option"
mountpoint -q "$MNT" || fail "-s: nothing is mounted"
assert_eq "$(cat "$MNT"/snapshots/src/hello)" hello "read through the -s mount"
timeout 10 fusermount3 -u "$MNT" || fail "unmount of the -s mount failed"
not_mounted "unmount of the -s mount"

note "7. a double-quoted context= with a comma, as mount(8) passes it"
CONTEXT='context="system_u:object_r:tmp_t:s0:c127,c456"'
if [[ -e /sys/fs/selinux/enforce ]]; then
    # SELinux decides: the context is passed to the kernel whole; a refusal is the kernel's,
    # never libfuse's "unknown option" for the part after the comma.
    rc=0
    env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -n -o "passphrase_file=$T/pass,$CONTEXT" \
        -t pitrfs 2>"$T"/stderr || rc=$?
    cat "$T"/stderr
    grep -q "unknown option" "$T"/stderr && fail "the quoted context was split at its comma"
    if [[ $rc -eq 0 ]]; then
        grep " $MNT " /proc/mounts | grep -q "c127,c456" || fail "the context is not on the mount"
        timeout 10 fusermount3 -u "$MNT" || fail "unmount of the context= mount failed"
    else
        grep -q "could not mount" "$T"/stderr || fail "a refused context= gave no clear message"
    fi
else
    # No SELinux: the kernel would refuse the mount with it; dropped, as mount(8) drops it.
    expect_exit 0 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -n -v \
        -o "passphrase_file=$T/pass,$CONTEXT,cache_size=64M" -t pitrfs
    grep -q "ignoring mount option $CONTEXT: SELinux is not enabled" "$T"/stderr ||
        fail "-v did not say that the context was dropped"
    mountpoint -q "$MNT" || fail "the context= mount: nothing is mounted"
    grep " $MNT " /proc/mounts | grep -q context && fail "a context is on the mount without SELinux"
    cmp "$T"/src/big "$MNT"/snapshots/src/big || fail "read through the context= mount differs"
    timeout 10 fusermount3 -u "$MNT" || fail "unmount of the context= mount failed"
fi
not_mounted "the context= mount"

note "7. passphrase_file=<(...): a pipe, read once before the mount goes to the background"
env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" \
    -o passphrase_file=<(printf '%s\n' "$PITR_PASSPHRASE") 2>"$T"/stderr ||
    fail "mount with passphrase_file=<(...) failed: $(cat "$T"/stderr)"
mountpoint -q "$MNT" || fail "passphrase_file=<(...): nothing is mounted"
cmp "$T"/src/big "$MNT"/snapshots/"$ID"/big ||
    fail "read through the passphrase_file=<(...) mount differs"
timeout 10 fusermount3 -u "$MNT" || fail "unmount of the passphrase_file=<(...) mount failed"
not_mounted "unmount of the passphrase_file=<(...) mount"
# A wrong passphrase through a pipe is a wrong one, not an empty one.
expect_exit 2 env -u PITR_PASSPHRASE "$MOUNT" "$REPO" "$MNT" -o passphrase_file=<(echo wrong)
grep -q "wrong passphrase" "$T"/stderr || fail "no 'wrong passphrase' for a wrong piped passphrase"
not_mounted "a wrong piped passphrase"

note "7. mount(8): mount -t pitrfs REPO DIR -o passphrase_file=F"
# mount(8) runs its helper from /sbin and from nowhere else, and what is installed there (an
# older mount.pitrfs, or none) is not what this test is about. So mount(8) runs in a mount
# namespace of its own, where this build's bin/ covers /sbin; this machine's /sbin is never
# touched. $T becomes a shared mount first, so that the FUSE mount the helper makes below it in
# that namespace appears here too, where the test reads it and unmounts it.
SBIN=$(readlink -f /sbin)
mount --bind "$T" "$T" && mount --make-shared "$T" || fail "could not make $T a shared mount"
cleanup_hooks+=("umount -l '$T'")
# mount(8) with this build's helper: "${MOUNT8[@]}" ARGS... (a command, so env and timeout run it)
MOUNT8=(unshare --mount --propagation unchanged -- sh -ec '
    sbin=$1 bin=$2
    shift 2
    mount --make-private "$(findmnt -n -o TARGET --target "$sbin")"
    mount --bind "$bin" "$sbin"
    exec mount "$@"' sh "$SBIN" "$PITR_BIN")
# The daemon serving $MNT runs this build's mount.pitrfs.
check_daemon_binary() {
    local pid
    pid=$(daemon_pid)
    [[ -n $pid ]] || fail "no mount.pitrfs process serves $MNT"
    [[ $(stat -L -c %d:%i /proc/"$pid"/exe) == $(stat -L -c %d:%i "$MOUNT") ]] ||
        fail "mount(8) ran $(readlink /proc/"$pid"/exe), not this build's $MOUNT"
}
env -u PITR_PASSPHRASE "${MOUNT8[@]}" -t pitrfs "$REPO" "$MNT" \
    -o passphrase_file="$T"/pass,cache_size=64M,noauto,nofail,x-systemd.automount ||
    fail "mount -t pitrfs failed"
mountpoint -q "$MNT" || fail "mount -t pitrfs returned 0 but nothing is mounted"
grep " $MNT " /proc/mounts
grep -q "^$(readlink -f "$REPO") $MNT fuse.pitrfs ro," /proc/mounts ||
    fail "/proc/mounts does not show a read-only fuse.pitrfs with the repository as source"
cmp "$T"/src/big "$MNT"/snapshots/src/big || fail "read through the mount(8) mount differs"
check_readahead 1024 "a mount with the default options"
check_daemon_binary
pid=$(daemon_pid)
[[ -n $pid ]] || fail "no mount.pitrfs process serves $MNT"
timeout 10 umount "$MNT" || fail "umount failed"
not_mounted "umount"
wait_gone "$pid" "mount.pitrfs still runs 10 s after umount"

note "7. fstab: mount --fstab F DIR"
printf '%s %s pitrfs ro,noauto,passphrase_file=%s,allow_other 0 0\n' "$REPO" "$MNT" "$T"/pass >"$T"/fstab
env -u PITR_PASSPHRASE "${MOUNT8[@]}" --fstab "$T"/fstab "$MNT" || fail "mount from an fstab line failed"
assert_eq "$(cat "$MNT"/snapshots/latest/hello)" hello "read through the fstab mount"
check_daemon_binary
grep " $MNT " /proc/mounts | grep -q allow_other || fail "allow_other was not passed on"
timeout 10 umount "$MNT" || fail "umount of the fstab mount failed"
not_mounted "umount of the fstab mount"
printf '%s %s pitrfs ro,noauto,passphrase_file=%s 0 0\n' "$REPO" "$MNT" "$T"/wrong-pass >"$T"/fstab
rc=0
env -u PITR_PASSPHRASE "${MOUNT8[@]}" --fstab "$T"/fstab "$MNT" 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] || fail "mount with a wrong passphrase file succeeded"
grep -q "wrong passphrase" "$T"/stderr || fail "mount(8) did not show the helper's error"
not_mounted "mount(8) with a wrong passphrase"

note "7. mount -f: mount(8)'s fake mount passes -f to the helper, which mounts nothing"
env -u PITR_PASSPHRASE timeout 10 "${MOUNT8[@]}" -f -t pitrfs "$REPO" "$MNT" \
    -o passphrase_file="$T"/pass || fail "mount -f -t pitrfs failed"
not_mounted "mount -f"
pgrep -f -- "mount.pitrfs $REPO" && fail "mount -f left a process behind"
note "7. mount(8) with passphrase_file=<(...)"
env -u PITR_PASSPHRASE "${MOUNT8[@]}" -t pitrfs "$REPO" "$MNT" \
    -o passphrase_file=<(printf '%s\n' "$PITR_PASSPHRASE") ||
    fail "mount(8) with a piped passphrase failed"
assert_eq "$(cat "$MNT"/snapshots/latest/hello)" hello "read through the piped-passphrase mount"
timeout 10 umount "$MNT" || fail "umount of the piped-passphrase mount failed"
not_mounted "umount of the piped-passphrase mount"

note "8. SIGTERM unmounts cleanly"
"$MOUNT" "$REPO" "$MNT" --foreground 2>"$T"/fg.log &
pid=$!
for i in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || fail "foreground mount did not come up: $(cat "$T"/fg.log)"
kill -TERM "$pid"
wait_gone "$pid" "mount.pitrfs ignored SIGTERM for 10 s"
wait "$pid" || fail "mount.pitrfs exited $? on SIGTERM"
not_mounted "SIGTERM"

note "8. SIGTERM to the background daemon, mounted with relative paths"
(cd "$T" && "$MOUNT" repo mnt -o kernel_readahead=256K) ||
    fail "background mount with relative paths failed"
check_readahead 256 "a mount by relative path with kernel_readahead=256K"
pid=$(pgrep -f -- "mount.pitrfs repo mnt" | head -n 1 || true)
[[ -n $pid ]] || fail "no daemon for the relative mount"
cmp "$T"/src/hello "$MNT"/snapshots/src/hello || fail "read through the relative mount differs"
kill -TERM "$pid"
wait_gone "$pid" "the background mount.pitrfs ignored SIGTERM for 10 s"
not_mounted "SIGTERM to the background daemon"

note "8. unmount while a reader is active"
"$MOUNT" "$REPO" "$MNT" || fail "background mount failed"
pid=$(daemon_pid)
cat >"$T"/reader.py <<'PY'
import os, sys, time
path, stop, progress = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_RDONLY)
size, off, n = os.fstat(fd).st_size, 0, 0
while not os.path.exists(stop):
    if not os.pread(fd, 1 << 20, off):
        raise SystemExit("empty read")
    off = (off + (1 << 20)) % size
    n += 1
    if n % 8 == 0:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # keep the daemon busy
        with open(progress + ".tmp", "w") as f:  # never seen half-written
            f.write(str(n))
        os.replace(progress + ".tmp", progress)
    time.sleep(0.01)
os.close(fd)
PY
python3 "$T"/reader.py "$MNT"/snapshots/src/big "$T"/stop "$T"/progress &
READER_PID=$!
wait_until 10 test -s "$T"/progress || fail "the reader made no progress"
rc=0
timeout 10 fusermount3 -u "$MNT" 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 124 ]] || fail "fusermount3 -u of a busy mount hung"
[[ $rc -ne 0 ]] || fail "fusermount3 -u of a busy mount succeeded (expected: busy)"
grep -qi busy "$T"/stderr || fail "fusermount3 -u did not say the mount is busy"
# Busy: a lazy unmount detaches it now; the open file keeps working until it is closed, and the
# daemon ends when the kernel lets go of the filesystem.
timeout 10 fusermount3 -uz "$MNT" || fail "fusermount3 -uz failed or hung"
not_mounted "lazy unmount"
p0=$(cat "$T"/progress)
progressed() { (($(cat "$T"/progress) > p0)); }
wait_until 10 progressed || fail "the reader made no progress for 10 s after the lazy unmount"
touch "$T"/stop
wait "$READER_PID" || fail "the reader failed after the lazy unmount"
READER_PID=
wait_gone "$pid" "mount.pitrfs still runs 10 s after the last file of a lazy unmount was closed"

note "8. kill -9 of the daemon leaves a dead mount that fusermount3 -u clears"
"$MOUNT" "$REPO" "$MNT" || fail "background mount failed"
pid=$(daemon_pid)
[[ -n $pid ]] || fail "no daemon serves $MNT"
kill -9 "$pid"
wait_gone "$pid" "mount.pitrfs survived kill -9"
rc=0
stat "$MNT"/snapshots 2>"$T"/stderr || rc=$?
cat "$T"/stderr
[[ $rc -ne 0 ]] && grep -q "Transport endpoint is not connected" "$T"/stderr ||
    fail "a mount without its daemon should fail with ENOTCONN"
timeout 10 fusermount3 -u "$MNT" || fail "fusermount3 -u of a dead mount failed or hung"
not_mounted "fusermount3 -u after kill -9"
"$MOUNT" "$REPO" "$MNT" || fail "mounting again after kill -9 failed"
cmp "$T"/src/big "$MNT"/snapshots/"$ID"/big || fail "read after remount differs"
timeout 10 fusermount3 -u "$MNT" || fail "final unmount failed"
not_mounted "final unmount"
echo "ok"
