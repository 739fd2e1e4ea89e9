#!/usr/bin/env bash
# WAL full-page images stored as references to data pages, with real PostgreSQL 15 WAL:
#  1. data checksums on: an index build logs every index page as an image; `pitr-snap store`
#     of the stopped data directory refers most of them to the index file's pages, the
#     repository is smaller than the same directory stored with its WAL as it is, and the
#     restored copy is byte-identical, starts, and its index passes amcheck;
#  2. data checksums off, wal_compression on: compressed images are not reported (there is
#     nothing to compare), the ones pglz gave up on are referred to, and the copy is
#     byte-identical too;
#  3. segments with a flipped byte: the images after it are not found, those before it are
#     still referred to, and the segments restore byte for byte;
#  4. the same directory stored again after another index build: the files the files cache
#     knows unchanged (old segments among them) are not read, the new segments are, with
#     their images referred to, and the copy is byte-identical.
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
    # The index build logs each index page as an image.
    psql_at "$2" -c "SELECT (pg_relation_size('t_id') + pg_relation_size('t_pad')) / 8192" \
        >"$1".index-pages || fail "could not size the indexes in $1"
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
sleep 2.2 # the files cache trusts change times older than two seconds (part 4)
store_and_restore "$T"/pg1 "$T"/one.json "$T"/repo1
images=$(stats_of "$T"/one.json wal_images)
referred=$(stats_of "$T"/one.json wal_images_referred)
bytes=$(stats_of "$T"/one.json wal_bytes_referred)
index_pages=$(cat "$T"/pg1.index-pages)
images_pg1=$images
echo "images $images, referred $referred, bytes $bytes; index pages $index_pages"
# Also in the WAL: heap pages logged when the build set their hint bits (data checksums), as
# they were before, so they differ from the pages stored; those stay in the segments.
((index_pages >= 1000)) || fail "the indexes have only $index_pages pages"
((images >= index_pages)) || fail "only $images images found for $index_pages index pages"
((referred * 10 >= index_pages * 9)) || fail "only $referred images referred for $index_pages index pages"
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
images=$(stats_of "$T"/two.json wal_images)
referred=$(stats_of "$T"/two.json wal_images_referred)
index_pages=$(cat "$T"/pg2.index-pages)
echo "uncompressed images $images, referred $referred; index pages $index_pages"
# pglz compresses the pages of the integer index; it gives up on most pages of md5 text, which
# are logged as they are. Only those are reported, and referred to.
((images < index_pages * 9 / 10)) || fail "$images uncompressed images for $index_pages index pages"
((images > 0 && referred * 10 >= images * 9)) || fail "only $referred of $images images referred to"

note "4. stored again after another index build: unchanged files are not read"
pg_start "$T"/pg1 "$T"/pg1.log
psql_at "$P1" -c "CREATE INDEX t_pad2 ON t (pad, id)" >/dev/null || fail "the second index build failed"
pg_stop "$T"/pg1
"$SNAP" -r "$T"/repo1 store "$T"/pg1 --name pg --json >"$T"/four.json || fail "second store of pg1 failed"
unchanged=$(stats_of "$T"/four.json files_unchanged)
echo "unchanged files $unchanged of $(stats_of "$T"/four.json files);" \
    "images $(stats_of "$T"/four.json wal_images), referred $(stats_of "$T"/four.json wal_images_referred)"
((unchanged > 0)) || fail "the second store took no file from the first"
(($(stats_of "$T"/four.json wal_images_referred) > 0)) || fail "no image of the new index referred to"
rm -rf "$T"/restored
"$SNAP" -r "$T"/repo1 restore pg "$T"/restored >/dev/null || fail "restore of the second store failed"
diff -r "$T"/pg1 "$T"/restored >/dev/null || fail "the restored copy of the second store differs"
assert_same_tree "$T"/pg1 "$T"/restored

note "3. segments with a flipped byte"
# The middle byte of every segment flipped: a segment full of the index build's images has a
# record there, whose CRC then fails, so the parse of that segment ends there.
for seg in "$T"/pg1/pg_wal/*; do
    [[ $(basename "$seg") =~ ^[0-9A-F]{24}$ ]] || continue
    python3 - "$seg" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x40
open(p, "wb").write(b)
PY
done
store_and_restore "$T"/pg1 "$T"/three.json "$T"/repo3
echo "images $(stats_of "$T"/three.json wal_images), referred $(stats_of "$T"/three.json wal_images_referred)"
((images_pg1 > $(stats_of "$T"/three.json wal_images))) ||
    fail "a record with a wrong CRC did not end the parse of its segment"
referred=$(stats_of "$T"/three.json wal_images_referred)
((referred > 0)) || fail "no image before the flipped bytes was referred to"
echo "PASS"
