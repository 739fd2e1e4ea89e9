#!/usr/bin/env bash
# make install and make uninstall, into a DESTDIR: the programs and manual pages go under
# PREFIX, mount.pitrfs into PREFIX/sbin and, unless PREFIX is / or /usr, a link to it in /sbin,
# where mount(8) looks for helpers; the install output says that the link is outside PREFIX; the
# installed programs run; uninstall removes exactly what install put there, and leaves alone the
# files beside them and a /sbin/mount.pitrfs that is not the link install made.
. "$(dirname "$0")/lib.sh"
require make readlink
: "${PITR_SRC:?run through make check (tests/run-tests.sh)}"
BUILD_DIR=${PITR_BUILD#"$PITR_SRC"/}

# make in the source tree with this test run's build directory. Not the make that may have
# started this test: its jobserver is not ours.
run_make() {
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
        make --no-print-directory -C "$PITR_SRC" BUILD="$BUILD_DIR" "$@"
}
# Everything but directories under $1: type, path, link target.
listing() { (cd "$1" && find . -mindepth 1 ! -type d -printf '%y %p %l\n' | sort); }
# listing of $1 must be the lines given, in any order.
assert_listing() {
    local root=$1 what=$2
    shift 2
    diff <( (($#)) && printf '%s\n' "$@" | sort) <(listing "$root") ||
        fail "$what: other files than expected"
}
assert_same_file() { # INSTALLED BUILT MODE
    cmp "$1" "$2" || fail "$1 differs from $2"
    assert_eq "$(stat -c %a "$1")" "$3" "mode of $1"
}

note "PREFIX=/usr/local (the default): mount.pitrfs in /usr/local/sbin, linked from /sbin"
ROOT=$T/root
mkdir -p "$ROOT"/usr/local/bin "$ROOT"/usr/local/share/man/man1
echo other >"$ROOT"/usr/local/bin/other-program
echo other >"$ROOT"/usr/local/share/man/man1/other.1
before=$(listing "$ROOT")
run_make DESTDIR="$ROOT" install >"$T"/install.out 2>&1 || { cat "$T"/install.out; fail "make install failed"; }
cat "$T"/install.out
grep -q "/sbin/mount.pitrfs -> /usr/local/sbin/mount.pitrfs is outside PREFIX" "$T"/install.out ||
    fail "make install does not say that /sbin/mount.pitrfs is outside PREFIX"
assert_listing "$ROOT" "PREFIX=/usr/local" \
    "f ./usr/local/bin/other-program " "f ./usr/local/share/man/man1/other.1 " \
    "f ./usr/local/bin/pitr-snap " "f ./usr/local/bin/pitr-agent " \
    "f ./usr/local/sbin/mount.pitrfs " "l ./sbin/mount.pitrfs /usr/local/sbin/mount.pitrfs" \
    "f ./usr/local/share/man/man1/pitr-snap.1 " "f ./usr/local/share/man/man1/pitr-agent.1 " \
    "f ./usr/local/share/man/man8/mount.pitrfs.8 "
for p in pitr-snap pitr-agent; do
    assert_same_file "$ROOT"/usr/local/bin/$p "$PITR_BIN"/$p 755
done
assert_same_file "$ROOT"/usr/local/sbin/mount.pitrfs "$PITR_BIN"/mount.pitrfs 755
for m in pitr-snap.1 pitr-agent.1; do
    assert_same_file "$ROOT"/usr/local/share/man/man1/$m "$PITR_SRC"/docs/man/$m 644
done
assert_same_file "$ROOT"/usr/local/share/man/man8/mount.pitrfs.8 "$PITR_SRC"/docs/man/mount.pitrfs.8 644
"$ROOT"/usr/local/bin/pitr-snap --version | grep -Eq '^pitr-snap [0-9]' || fail "the installed pitr-snap does not run"
"$ROOT"/usr/local/bin/pitr-agent --version | grep -Eq '^pitr-agent [0-9]' || fail "the installed pitr-agent does not run"
"$ROOT"/usr/local/sbin/mount.pitrfs --version | grep -q '^mount.pitrfs' || fail "the installed mount.pitrfs does not run"

note "install over an earlier install (and over an earlier version's copy in /sbin) is the same"
rm "$ROOT"/sbin/mount.pitrfs
cp "$PITR_BIN"/mount.pitrfs "$ROOT"/sbin/mount.pitrfs
run_make DESTDIR="$ROOT" install >/dev/null 2>&1 || fail "make install over an install failed"
assert_eq "$(readlink "$ROOT"/sbin/mount.pitrfs)" /usr/local/sbin/mount.pitrfs \
    "/sbin/mount.pitrfs after a second install"

note "uninstall removes what install put there, and nothing else"
run_make DESTDIR="$ROOT" uninstall || fail "make uninstall failed"
diff <(echo "$before") <(listing "$ROOT") || fail "make uninstall did not leave what was there before install"
run_make DESTDIR="$ROOT" uninstall >/dev/null || fail "make uninstall of nothing failed"

note "uninstall leaves a /sbin/mount.pitrfs that is not the link install made"
run_make DESTDIR="$ROOT" install >/dev/null 2>&1 || fail "make install failed"
ln -sfn /opt/other/mount.pitrfs "$ROOT"/sbin/mount.pitrfs
run_make DESTDIR="$ROOT" uninstall >"$T"/uninstall.out 2>&1 || fail "make uninstall failed"
cat "$T"/uninstall.out
assert_eq "$(readlink "$ROOT"/sbin/mount.pitrfs)" /opt/other/mount.pitrfs "a foreign /sbin/mount.pitrfs"
grep -q "is not the link to /usr/local/sbin/mount.pitrfs that install made: left alone" "$T"/uninstall.out ||
    fail "make uninstall does not say why it left /sbin/mount.pitrfs"
assert_listing "$ROOT" "after uninstall with a foreign /sbin/mount.pitrfs" \
    "f ./usr/local/bin/other-program " "f ./usr/local/share/man/man1/other.1 " \
    "l ./sbin/mount.pitrfs /opt/other/mount.pitrfs"

note "PREFIX=/usr: mount.pitrfs in /usr/sbin, no link (/sbin is /usr/sbin on a merged /usr)"
ROOT=$T/root-usr
run_make DESTDIR="$ROOT" PREFIX=/usr install >"$T"/install.out 2>&1 || { cat "$T"/install.out; fail "make install PREFIX=/usr failed"; }
grep -q "merged /usr" "$T"/install.out || fail "make install PREFIX=/usr does not say where mount(8) finds mount.pitrfs"
assert_listing "$ROOT" "PREFIX=/usr" \
    "f ./usr/bin/pitr-snap " "f ./usr/bin/pitr-agent " "f ./usr/sbin/mount.pitrfs " \
    "f ./usr/share/man/man1/pitr-snap.1 " "f ./usr/share/man/man1/pitr-agent.1 " \
    "f ./usr/share/man/man8/mount.pitrfs.8 "
run_make DESTDIR="$ROOT" PREFIX=/usr uninstall || fail "make uninstall PREFIX=/usr failed"
assert_listing "$ROOT" "after uninstall PREFIX=/usr"

note "PREFIX=/: mount.pitrfs in /sbin itself"
ROOT=$T/root-slash
run_make DESTDIR="$ROOT" PREFIX=/ install >/dev/null 2>&1 || fail "make install PREFIX=/ failed"
assert_listing "$ROOT" "PREFIX=/" \
    "f ./bin/pitr-snap " "f ./bin/pitr-agent " "f ./sbin/mount.pitrfs " \
    "f ./share/man/man1/pitr-snap.1 " "f ./share/man/man1/pitr-agent.1 " \
    "f ./share/man/man8/mount.pitrfs.8 "
run_make DESTDIR="$ROOT" PREFIX=/ uninstall || fail "make uninstall PREFIX=/ failed"
assert_listing "$ROOT" "after uninstall PREFIX=/"
echo "ok"
