#!/usr/bin/env bash
# WAL full-page images stored as references to data pages, with real PostgreSQL 15 WAL:
#  1. data checksums on: an index build logs every index page as an image; `pitr-snap store`
#     of the stopped data directory refers most of them to the index file's pages, the
#     repository is smaller than the same directory stored with its WAL as it is, and the
#     restored copy is byte-identical, starts, and its index passes amcheck;
#  2. data checksums off, wal_compression on: compressed images are not referred to (there is
#     nothing to compare), and the copy is byte-identical too;
#  3. a segment with a flipped byte in an image: stored, restored byte for byte.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"

P1=$(free_port 21520)
P2=$(free_port $((P1 + 1)))

# stats_of JSON KEY: one field of `store --json`'s stats.
stats_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"][sys.argv[2]])' "$1" "$2"; }

# A cluster with an index built on 200,000 rows, stopped cleanly so its files hold still.
make_cluster() { # make_cluster DATADIR PORT CHECKSUMS(on|off) WAL_COMPRESSION
    if [[ $3 == on ]]; then
        pg_init "$1" "$2"
    else
        as_pg "$PGBIN"/initdb -A trust -U postgres -D "$1" >/dev/null || fail "initdb of $1 failed"
        cat >>"$1"/postgresql.conf <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$T/sock'
CONF
    fi
    echo "wal_compression = $4" >>"$1"/postgresql.conf
    pg_start "$1" "$1".log
    psql_at "$2" -c "CREATE TABLE t (id int, pad text)" \
        -c "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200000) g" \
        -c "CHECKPOINT" -c "CREATE INDEX t_id ON t (id)" -c "CREATE INDEX t_pad ON t (pad)" \
        -c "CREATE EXTENSION amcheck" >/dev/null || fail "could not fill the cluster in $1"
    pg_stop "$1"
}

# Store DATADIR into a new repository, restore it, compare; the store's JSON is left in $2.
store_and_restore() { # store_and_restore DATADIR JSON REPO
    init_repo "$3"
    "$SNAP" -r "$3" store "$1" --name pg --json >"$2" || fail "store of $1 failed"
    rm -rf "$T"/restored
    "$SNAP" -r "$3" restore pg "$T"/restored >/dev/null || fail "restore of $1 failed"
    diff -r "$1" "$T"/restored >/dev/null || fail "the restored copy of $1 differs"
    assert_same_tree "$1" "$T"/restored
}

note "1. checksums on: index images refer to the index's pages"
make_cluster "$T"/pg1 "$P1" on off
store_and_restore "$T"/pg1 "$T"/one.json "$T"/repo1
images=$(stats_of "$T"/one.json wal_images)
referred=$(stats_of "$T"/one.json wal_images_referred)
bytes=$(stats_of "$T"/one.json wal_bytes_referred)
echo "images $images, referred $referred, bytes $bytes"
# Two indexes of 200,000 rows are about 1,100 pages, each logged as an image.
((images >= 1000)) || fail "only $images images found in the WAL of an index build"
((referred * 10 >= images * 9)) || fail "only $referred of $images images referred to"
((bytes >= referred * 4000)) || fail "$bytes bytes referred for $referred images"
# The same directory with its WAL stored as it is (no page files: nothing to refer to) costs more.
init_repo "$T"/repo-plain
"$SNAP" -r "$T"/repo-plain store "$T"/pg1 --name pg --page-files none --json >"$T"/plain.json ||
    fail "store --page-files none failed"
[[ $(stats_of "$T"/plain.json wal_images_referred 2>/dev/null || echo 0) == 0 ]] ||
    fail "--page-files none referred WAL images"
with=$(du -sb "$T"/repo1/packs | cut -f1)
without=$(du -sb "$T"/repo-plain/packs | cut -f1)
echo "packs: $with bytes with references, $without without"
((with < without)) || fail "referring to pages did not make the repository smaller"
# The copy starts, and its indexes are sound.
chown -R postgres: "$T"/restored
chmod 700 "$T"/restored
sed -i "s/^port = .*/port = $P2/" "$T"/restored/postgresql.conf
pg_start "$T"/restored "$T"/restored.log
assert_eq "$(psql_at "$P2" -c "SELECT bt_index_check('t_id', true)::text || bt_index_check('t_pad', true)::text")" "" \
    "amcheck on the restored indexes"
assert_eq "$(psql_at "$P2" -c "SET enable_seqscan = off" -c "SELECT count(*) FROM t WHERE id BETWEEN 1000 AND 1999")" \
    1000 "an index scan on the restored copy"
pg_stop "$T"/restored

note "2. checksums off, wal_compression on"
make_cluster "$T"/pg2 "$P1" off on
store_and_restore "$T"/pg2 "$T"/two.json "$T"/repo2
echo "images $(stats_of "$T"/two.json wal_images), referred $(stats_of "$T"/two.json wal_images_referred)"
assert_eq "$(stats_of "$T"/two.json wal_images_referred)" 0 "compressed images referred to"

note "3. a segment with a flipped byte inside an image"
# The tenth image record of the index build: a byte 200 bytes into it (its block header or
# image, or a WAL page header) flipped. Its CRC fails, so the parse of that segment ends there.
lsn=$("$PGBIN"/pg_waldump -p "$T"/pg1/pg_wal -r Btree 2>/dev/null | grep FPW | sed -n 10p |
    sed -E 's/.*lsn: ([0-9A-F]+)\/([0-9A-F]+),.*/\1 \2/')
[[ -n $lsn ]] || fail "no B-tree record with a full-page image in the WAL"
read -r hi lo <<<"$lsn"
seg=$(printf '%08X%08X%08X' 1 $((16#$hi)) $((16#$lo / 16777216)))
off=$((16#$lo % 16777216 + 200))
echo "flipping byte $off of $seg"
python3 - "$T/pg1/pg_wal/$seg" "$off" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
b[off] ^= 0x40
open(p, "wb").write(b)
PY
store_and_restore "$T"/pg1 "$T"/three.json "$T"/repo3
echo "images $(stats_of "$T"/three.json wal_images), referred $(stats_of "$T"/three.json wal_images_referred)"
((images > $(stats_of "$T"/three.json wal_images))) ||
    fail "a record with a wrong CRC did not end the parse of its segment"
echo "PASS"
