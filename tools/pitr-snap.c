/*
 * pitr-snap: the repository command. Parses options, opens the repository and calls one
 * chunkstore function per verb; all logic lives in the libraries.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/pagecheck.h"
#include "agent/wal-dedup.h"
#include "chunkstore/catalog.h"
#include "chunkstore/keysource.h"
#include "chunkstore/read.h"
#include "chunkstore/tree.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/utf8.h"
#include "common/malloc-policy.h"
#include "common/parse.h"
#include "common/time-util.h"
#include "common/version.h"
#include "orchestrator/cluster.h"
#include "tools/common/cli.h"
#include "tools/pitr-snap.h"


Options opt = { .page_files = "auto" };

static void usage(FILE *f)
{
    fprintf(f,
            "pitr-snap stores directory trees and streams in an encrypted, deduplicating "
            "repository.\n\n"
            "Usage:\n"
            "  pitr-snap [OPTION]... init [--group GROUP]\n"
            "  pitr-snap -c CONFIG [OPTION]... create [--label L] [--restore-point-only]\n"
            "  pitr-snap -c CONFIG [OPTION]... restore ID [--target-dir DIR] [--force]\n"
            "  pitr-snap -c CONFIG [OPTION]... config check | config show | barrier-sql\n"
            "  pitr-snap [OPTION]... key export FILE\n"
            "  pitr-snap [OPTION]... store PATH [--name NAME]\n"
            "  pitr-snap [OPTION]... store --stdin --name NAME\n"
            "  pitr-snap [OPTION]... list | show ID | info\n"
            "  pitr-snap [OPTION]... restore ID TARGET       (tree and stream snapshots)\n"
            "  pitr-snap [OPTION]... cat ID [PATH]\n"
            "  pitr-snap [OPTION]... delete ID [--force]\n\n"
            "Repository and keys:\n"
            "  -c, --config=FILE        cluster configuration (default: $PITR_CONFIG); gives\n"
            "                           the repository and its key unless given below\n"
            "  -r, --repo=LOCATION      repository directory (default: $PITR_REPO)\n"
            "      --passphrase-file=F  read the passphrase from F (else $PITR_PASSPHRASE,\n"
            "                           else a prompt on the terminal)\n"
            "      --key-file=F         unlock with a key file made by 'key export'\n\n"
            "Storing:\n"
            "      --name=NAME          name of the snapshot (default: the path)\n"
            "      --stdin              store standard input as a stream\n"
            "      --page-files=MODE    auto: cut PostgreSQL relation files in page blocks,\n"
            "                           and store WAL full-page images as references to\n"
            "                           those pages (default); none: chunk every file by\n"
            "                           content\n"
            "      --parent=ID          store changed pages as deltas of this earlier snapshot\n"
            "                           (default: the newest of the same name, else of the\n"
            "                           same path; none: store them whole)\n"
            "      --full-read          read every file: by default a file whose inode, size,\n"
            "                           and change and modification times are as the last\n"
            "                           store of the same path saw them is taken from the\n"
            "                           parent snapshot unread\n"
            "  -j, --threads=N          worker threads (default: one per CPU)\n\n"
            "Cluster snapshots:\n"
            "      --label=L            label of the new snapshot\n"
            "      --restore-point-only a new CSN restore point against the latest base\n"
            "                           backups: seconds, not minutes\n"
            "      --parallel=N         agents working at once (default: all)\n"
            "      --lock-timeout=D     create: how long one attempt waits for the commit\n"
            "                           barrier, and so the longest a commit waits for it\n"
            "                           (default: barrier.lock_timeout, 50ms)\n"
            "      --barrier-deadline=D create: give up on the barrier after D (default:\n"
            "                           barrier.deadline, 10s)\n"
            "      --target-dir=DIR     restore each node into DIR/<node> on its host instead\n"
            "                           of in place (nothing is stopped or started)\n\n"
            "Restoring:\n"
            "      --force              tree: restore into a non-empty directory; cluster:\n"
            "                           restore although the nodes differ from the snapshot's;\n"
            "                           delete: a base backup that cluster snapshots need, or a\n"
            "                           record that cannot be read\n"
            "      --no-sync            tree and stream: return without waiting for the data\n"
            "                           to reach the disk (faster; not safe against a crash)\n\n"
            "Init:\n"
            "      --chunk-min=N --chunk-avg=N --chunk-max=N   content chunk sizes (bytes)\n"
            "      --page-size=N        page block size (default 8192)\n"
            "      --compression=N      zstd level 1-19 (default 3)\n"
            "      --pack-size=N        target pack size in bytes (default 32 MiB)\n"
            "      --scrypt-n=N         scrypt cost, a power of two (default 65536; lower only\n"
            "                           for tests)\n"
            "      --group=GROUP        share the repository with GROUP: its members read it\n"
            "                           and add to it (default: the directory's setgid group,\n"
            "                           else the owner alone)\n\n"
            "Output:\n"
            "      --json               machine-readable output\n"
            "  -q, --quiet              errors only\n"
            "  -v, --verbose            debug messages\n"
            "  -h, --help               this help\n"
            "  -V, --version            version\n\n"
            "Exit status: 0 success, 1 failure, 2 wrong passphrase or key, 3 not a repository\n"
            "or unsupported format, 4 damaged data, 5 repository busy, 6 a cluster operation\n"
            "failed on a node, 64 usage error, 75 commit barrier not granted in time.\n");
}

int open_repo(bool read_only, CsRepo **ret)
{
    if (!opt.repo)
        return log_error_errno(-EINVAL, "no repository given\nHINT: use --repo or PITR_REPO");
    return cs_repo_unlock(opt.repo, opt.key.passphrase_file, opt.key.keyfile,
                          &(CsOpenParams){ .read_only = read_only }, ret);
}


static int cmd_init(int argc, char **argv)
{
    (void)argv;
    if (argc != 1 || !opt.repo)
        return log_error_errno(-EINVAL, "usage: pitr-snap --repo LOCATION init");
    CsKeySource ks;
    int r = cs_key_source_resolve(opt.key.passphrase_file, opt.key.keyfile, true, &ks);
    if (r < 0)
        return r;
    if (ks.keyfile_path)
        return log_error_errno(-EINVAL, "init needs a passphrase, not a key file");
    r = cs_repo_init(opt.repo, &opt.init, &ks);
    cs_key_source_clear(&ks);
    if (r == 0)
        log_info("created repository \"%s\"", opt.repo);
    return r;
}

static int cmd_key(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "export") != 0)
        return log_error_errno(-EINVAL, "usage: pitr-snap key export FILE");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0)
        return r;
    if ((r = cs_repo_export_key(repo, argv[2])) == 0)
        log_info("key written to \"%s\" (mode 0600): keep it as safe as the data", argv[2]);
    return r;
}

/* What the tree's hooks in `store` need. */
typedef struct StoreHooks {
    const CsRepo *repo;
    AgentWalDedup *wal; /* NULL: WAL segments are stored as they are */
} StoreHooks;

/* PostgreSQL relation files: base/<db>/<relfilenode>[_fsm|_vm|_init][.<segment>] and the same
 * under global/ and tablespaces. They change page by page in place, so page blocks dedupe. */
static bool is_relation_file(const char *relpath, const struct stat *st, void *userdata)
{
    const CsRepo *repo = ((const StoreHooks *)userdata)->repo;
    if (st->st_size == 0 || st->st_size % repo->config.page_size)
        return false;
    const char *base = strrchr(relpath, '/');
    AgentRelFile rf;
    if (!base || !agent_relfile_parse(base + 1, &rf))
        return false;
    /* The parent is a database oid directory or global/. */
    const char *parent = base;
    while (parent > relpath && parent[-1] != '/')
        parent--;
    if (strncmp(parent, "global/", 7) == 0)
        return true;
    for (const char *q = parent; q < base; q++)
        if (*q < '0' || *q > '9')
            return false;
    return base > parent;
}

typedef struct Progress {
    double start; /* mono_now() */
    bool shown;
} Progress;

static void show_progress(const CsWriterStats *s, void *userdata)
{
    Progress *p = userdata;
    char a[32], b[32];
    double secs = mono_now() - p->start;
    fprintf(stderr, "\r%s read, %s new, %.0f MB/s   ", cli_size(s->bytes_in, a, sizeof(a)),
            cli_size(s->new_bytes, b, sizeof(b)), secs > 0 ? (double)s->bytes_in / secs / 1e6 : 0);
    p->shown = true;
}

/* The snapshot a new tree snapshot of `source` builds its deltas on: --parent, else the newest
 * tree of the same name, else the newest tree stored from the same path. */
static int find_parent(CsRepo *repo, const char *name, const char *source, CsSnapshot *ret)
{
    if (opt.parent && strcmp(opt.parent, "none") == 0)
        return -ENOENT;
    if (opt.parent) {
        int r = cs_catalog_find_or_log(repo, opt.parent, ret);
        if (r < 0)
            return r == -ENOENT ? -EINVAL : r; /* a bad argument, as a bad id is */
        if (strcmp(ret->kind, "tree") != 0) {
            cs_snapshot_clear(ret);
            return log_error_errno(-EINVAL, "--parent \"%s\" is a %s snapshot, not a tree",
                                   opt.parent, ret->kind);
        }
        return 0;
    }
    CsCatalog cat;
    int r = cs_catalog_load(repo, &cat);
    if (r < 0)
        return log_error_errno(r, "could not list the snapshots to choose a parent: %m");
    if (cat.n_problems) {
        /* The newest snapshot of this name may be the one that does not load. */
        cs_catalog_log_problems(&cat);
        r = log_error_errno(cs_catalog_problems_error(&cat),
                            "cannot choose the parent snapshot while %zu snapshot record%s "
                            "cannot be read\nHINT: give --parent with a full id, or --parent "
                            "none",
                            cat.n_problems, cat.n_problems == 1 ? "" : "s");
        cs_catalog_clear(&cat);
        return r;
    }
    CsSnapshot *v = cat.snaps;
    size_t n = cat.n_snaps;
    ssize_t by_name = -1, by_source = -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].kind, "tree") != 0)
            continue;
        json_t *src = json_object_get(v[i].meta, "source");
        if (strcmp(v[i].name, name) == 0)
            by_name = (ssize_t)i;
        if (json_is_string(src) && strcmp(json_string_value(src), source) == 0)
            by_source = (ssize_t)i;
    }
    ssize_t pick = by_name >= 0 ? by_name : by_source;
    if (pick >= 0) {
        *ret = v[pick];
        v[pick] = (CsSnapshot){ 0 };
    }
    cs_catalog_clear(&cat);
    return pick >= 0 ? 0 : -ENOENT;
}

static int store_wal_segment(CsWriter *w, const char *relpath, int dir_fd, int fd,
                             const struct stat *st, CsContentRef *ret, void *userdata)
{
    return agent_wal_dedup_store_file(((StoreHooks *)userdata)->wal, w, relpath, dir_fd, fd, st,
                                      ret);
}

static void remember_page_file(const char *relpath, const CsDirEntry *e, void *userdata)
{
    agent_wal_dedup_file_stored(((StoreHooks *)userdata)->wal, relpath, e);
}

static int cmd_store(int argc, char **argv)
{
    if ((opt.is_stdin && (argc != 1 || !opt.name)) || (!opt.is_stdin && argc != 2))
        return log_error_errno(-EINVAL, "usage: pitr-snap store PATH [--name NAME] | "
                                        "store --stdin --name NAME");
    if (strcmp(opt.page_files, "auto") != 0 && strcmp(opt.page_files, "none") != 0)
        return log_error_errno(-EINVAL, "--page-files must be auto or none");
    /* Snapshot records are JSON: a name must be text. A path that is not UTF-8 still names its
     * snapshot, with its other bytes written as \xHH. */
    if (opt.name && !utf8_is_valid(opt.name))
        return log_error_errno(-EINVAL, "--name must be UTF-8 text");
    _cleanup_free_ char *name = opt.name ? strdup(opt.name) : utf8_escape(argv[1]);
    if (!name)
        return log_error_errno(-ENOMEM, "out of memory");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(false, &repo);
    if (r < 0)
        return r;
    _cleanup_(cs_writer_freep) CsWriter *w = NULL;
    if ((r = cs_writer_new(repo, &(CsWriterParams){ .threads = opt.threads }, &w)) < 0)
        return r == -EBUSY ? r : log_error_errno(r, "could not start the pipeline: %m");
    Progress progress;
    progress.start = mono_now();
    progress.shown = false;
    if (cli_is_tty() && log_get_level() >= LOG_LEVEL_INFO)
        cs_writer_set_progress(w, show_progress, &progress);

    CsSnapshot snap = { 0 }, parent = { 0 };
    CsTreeStats ts = { 0 };
    _cleanup_(agent_wal_dedup_freep) AgentWalDedup *wal = NULL;
    CsTreeRootAttr root_attr = { 0 };
    _cleanup_free_ char *source_path = opt.is_stdin ? NULL : realpath(argv[1], NULL);
    _cleanup_free_ char *source = source_path ? utf8_escape(source_path) : NULL;
    if (opt.is_stdin) {
        snap.kind = strdup("stream");
        r = cs_writer_put_fd(w, STDIN_FILENO, CS_CHUNKING_CDC, &snap.root);
        if (r < 0)
            log_error_errno(r, "could not store standard input: %m");
    } else {
        /* With relation files found, so are the WAL images that copy their pages. */
        bool is_auto = strcmp(opt.page_files, "auto") == 0;
        if (is_auto && (r = agent_wal_dedup_new(repo, &wal)) < 0)
            return r;
        snap.kind = strdup("tree");
        StoreHooks hooks = { .repo = repo, .wal = wal };
        CsTreeParams tp = { .is_page_file = is_auto ? is_relation_file : NULL,
                            .store_file = is_auto ? store_wal_segment : NULL,
                            .file_stored = is_auto ? remember_page_file : NULL,
                            .use_files_cache = !opt.full_read,
                            .userdata = &hooks };
        if ((r = cs_tree_root_attr(argv[1], &root_attr)) < 0 || !source_path)
            log_error_errno(r < 0 ? r : -errno, "could not stat \"%s\": %m", argv[1]);
        else if (!source)
            r = log_error_errno(-ENOMEM, "out of memory");
        else {
            int q = find_parent(repo, name, source, &parent);
            if (q < 0 && q != -ENOENT)
                r = q;
            else {
                tp.previous = q == 0 ? &parent.root : NULL;
                if (q == 0)
                    log_info("parent snapshot %s: unchanged files are taken from it, changed "
                             "pages stored as deltas of it", parent.id);
                r = cs_tree_store(w, argv[1], &tp, &snap.root, &ts);
            }
        }
    }
    if (r == 0 && (r = cs_writer_flush(w)) < 0)
        log_error_errno(r, "could not write to the repository: %m");
    if (progress.shown)
        fputc('\n', stderr);
    CsWriterStats ws;
    cs_writer_stats(w, &ws);
    double secs = mono_now() - progress.start;
    if (r == 0) {
        snap.name = strdup(name);
        snap.meta = json_pack("{s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}}", "stats",
                              "files", (json_int_t)ts.files, "dirs", (json_int_t)ts.dirs,
                              "bytes_in", (json_int_t)ws.bytes_in, "chunks",
                              (json_int_t)ws.chunks, "new_chunks", (json_int_t)ws.new_chunks,
                              "new_bytes", (json_int_t)ws.new_bytes, "delta_chunks",
                              (json_int_t)ws.delta_chunks, "stored_bytes",
                              (json_int_t)ws.stored_bytes, "page_files",
                              (json_int_t)ts.page_files, "seconds", secs);
        json_t *stats = json_object_get(snap.meta, "stats");
        if (stats && strcmp(snap.kind, "tree") == 0) {
            json_object_set_new(stats, "bytes", json_integer((json_int_t)ts.bytes));
            json_object_set_new(stats, "files_unchanged",
                                json_integer((json_int_t)ts.files_cached));
            json_object_set_new(stats, "bytes_unchanged",
                                json_integer((json_int_t)ts.bytes_cached));
        }
        if (stats && wal) {
            AgentWalDedupStats as;
            agent_wal_dedup_stats(wal, &as);
            json_object_set_new(stats, "wal_images", json_integer((json_int_t)as.images));
            json_object_set_new(stats, "wal_images_referred",
                                json_integer((json_int_t)as.images_referred));
            json_object_set_new(stats, "wal_bytes_referred",
                                json_integer((json_int_t)as.bytes_referred));
        }
        if (snap.meta && source)
            json_object_set_new(snap.meta, "source", json_string(source));
        if (snap.meta && parent.kind)
            json_object_set_new(snap.meta, "parent", json_string(parent.id));
        if (snap.meta && strcmp(snap.kind, "tree") == 0)
            json_object_set_new(snap.meta, "root_attr",
                                json_pack("{s:I, s:I, s:I, s:I, s:I}", "mode",
                                          (json_int_t)root_attr.mode, "uid",
                                          (json_int_t)root_attr.uid, "gid",
                                          (json_int_t)root_attr.gid, "mtime",
                                          (json_int_t)root_attr.mtime_sec, "mtime_nsec",
                                          (json_int_t)root_attr.mtime_nsec));
        if (!snap.name || !snap.kind || !snap.meta)
            r = log_error_errno(-ENOMEM, "out of memory");
        else
            r = cs_catalog_add(repo, &snap);
    }
    char parent_id[sizeof(parent.id)];
    snprintf(parent_id, sizeof(parent_id), "%s", parent.id);
    cs_snapshot_clear(&parent);
    if (r < 0) {
        cs_snapshot_clear(&snap);
        return r;
    }
    if (opt.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:O}", "id", snap.id, "name", snap.name, "kind",
                              snap.kind, "stats", json_object_get(snap.meta, "stats"));
        cli_print_json(o);
        json_decref(o);
    } else {
        char a[32], b[32], c[32], d[32];
        printf("snapshot %s complete: %s read in %.1f s (%.0f MB/s), %s new, %s written\n",
               snap.id, cli_size(ws.bytes_in, a, sizeof(a)), secs,
               secs > 0 ? (double)ws.bytes_in / secs / 1e6 : 0.0,
               cli_size(ws.new_bytes, b, sizeof(b)), cli_size(ws.stored_bytes, c, sizeof(c)));
        if (ts.files_cached)
            printf("%" PRIu64 " unchanged files (%s) taken from snapshot %s without reading "
                   "them\n",
                   ts.files_cached, cli_size(ts.bytes_cached, d, sizeof(d)), parent_id);
    }
    cs_snapshot_clear(&snap);
    return 0;
}

/* Bytes the snapshot holds: for a tree its files' bytes (before the files cache, what was
 * read), for a stream its length. */
static uint64_t snapshot_size(const CsSnapshot *s)
{
    json_t *stats = json_object_get(s->meta, "stats");
    json_t *v = json_object_get(stats, "bytes");
    if (!json_is_integer(v))
        v = json_object_get(stats, "bytes_in");
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : s->root.size;
}

static json_t *snapshot_json(const CsSnapshot *s)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:O}", "id", s->id, "name", s->name, "kind",
                     s->kind, "time", (json_int_t)s->time, "hostname", s->hostname, "size",
                     (json_int_t)snapshot_size(s), "meta", s->meta);
}

static void format_time(int64_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", localtime_r(&tt, &tm));
}

static json_t *problem_json(const CsCatalogProblem *p)
{
    char text[128];
    return json_pack("{s:s, s:s, s:s, s:b}", "id", p->id, "object", p->object, "error",
                     cs_catalog_problem_text(p, text, sizeof(text)), "damaged",
                     cs_catalog_problem_is_damage(p));
}

/* Records that do not load are listed too, after the others (their time is unknown), and make
 * the exit status say so: a list that leaves a snapshot out must not pass for complete. */
static int cmd_list(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-snap list");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0)
        return r;
    CsCatalog cat;
    if ((r = cs_catalog_load(repo, &cat)) < 0)
        return log_error_errno(r, "could not list snapshots: %m");
    const CsSnapshot *v = cat.snaps;
    if (opt.json) {
        json_t *a = json_array();
        for (size_t i = 0; i < cat.n_snaps; i++)
            json_array_append_new(a, snapshot_json(&v[i]));
        for (size_t i = 0; i < cat.n_problems; i++)
            json_array_append_new(a, problem_json(&cat.problems[i]));
        cli_print_json(a);
        json_decref(a);
    } else {
        printf("%-16s  %-19s  %-6s  %10s  %s\n", "ID", "TIME", "KIND", "SIZE", "NAME");
        for (size_t i = 0; i < cat.n_snaps; i++) {
            char t[32], sz[32];
            format_time(v[i].time, t, sizeof(t));
            printf("%-16s  %-19s  %-6s  %10s  %s\n", v[i].id, t, v[i].kind,
                   cli_size(snapshot_size(&v[i]), sz, sizeof(sz)), v[i].name);
            if (strcmp(v[i].kind, "cluster") == 0)
                print_cluster_list_line(&v[i]);
        }
        for (size_t i = 0; i < cat.n_problems; i++) {
            char text[128];
            printf("%-16s  record \"%s\" %s\n", cat.problems[i].id, cat.problems[i].object,
                   cs_catalog_problem_text(&cat.problems[i], text, sizeof(text)));
        }
    }
    if ((r = cs_catalog_problems_error(&cat)) < 0) {
        /* Named on stderr too, for whoever reads only that. */
        char ids[11 * (2 * CS_SNAP_ID_SIZE + 2) + 32] = "";
        for (size_t i = 0; i < cat.n_problems && i < 10; i++)
            snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "%s%.*s", i ? ", " : "",
                     2 * CS_SNAP_ID_SIZE, cat.problems[i].id);
        if (cat.n_problems > 10)
            snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), " and %zu more",
                     cat.n_problems - 10);
        log_error_errno(r,
                        "%zu of %zu snapshot records could not be read: %s; until they can, or "
                        "are deleted, commands refuse \"latest\", names and id prefixes\nHINT: %s",
                        cat.n_problems, cat.n_problems + cat.n_snaps, ids,
                        cs_catalog_problems_hint(&cat));
    }
    cs_catalog_clear(&cat);
    return r;
}

/* Open the repository read-only and find the snapshot named by `spec`; with ret_reader, also a
 * reader for its data. On failure nothing is left open. */
static int open_snapshot(const char *spec, CsRepo **ret_repo, CsSnapshot *ret,
                         CsReader **ret_reader)
{
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0 || (r = cs_catalog_find_or_log(repo, spec, ret)) < 0)
        return r;
    if (ret_reader && (r = cs_reader_new(repo, ret_reader)) < 0) {
        cs_snapshot_clear(ret);
        return r;
    }
    *ret_repo = TAKE_PTR(repo);
    return 0;
}

static int cmd_show(int argc, char **argv)
{
    if (argc != 2)
        return log_error_errno(-EINVAL, "usage: pitr-snap show ID");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    CsSnapshot s;
    int r = open_snapshot(argv[1], &repo, &s, NULL);
    if (r < 0)
        return r;
    json_t *o = snapshot_json(&s);
    if (opt.json) {
        cli_print_json(o);
    } else {
        char t[32], sz[32];
        format_time(s.time, t, sizeof(t));
        printf("id:       %s\nname:     %s\nkind:     %s\ntime:     %s\nhost:     %s\n"
               "size:     %s\n",
               s.id, s.name, s.kind, t, s.hostname, cli_size(snapshot_size(&s), sz, sizeof(sz)));
        if (strcmp(s.kind, "cluster") == 0)
            print_cluster_show(&s);
        json_t *stats = json_object_get(s.meta, "stats");
        const char *k;
        json_t *val;
        json_object_foreach(stats, k, val) {
            if (json_is_integer(val))
                printf("%-9s %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(val));
            else if (json_is_real(val))
                printf("%-9s %.3f\n", k, json_real_value(val));
        }
    }
    json_decref(o);
    cs_snapshot_clear(&s);
    return 0;
}

static bool root_attr_from_json(json_t *o, CsTreeRootAttr *ret)
{
    json_int_t mode, uid, gid, mtime, nsec;
    if (!o || json_unpack(o, "{s:I, s:I, s:I, s:I, s:I}", "mode", &mode, "uid", &uid, "gid", &gid,
                          "mtime", &mtime, "mtime_nsec", &nsec) < 0)
        return false;
    *ret = (CsTreeRootAttr){ .mode = (uint32_t)mode,
                             .uid = (uint32_t)uid,
                             .gid = (uint32_t)gid,
                             .mtime_sec = mtime,
                             .mtime_nsec = (uint32_t)nsec };
    return true;
}

static int cmd_restore(int argc, char **argv)
{
    if (argc == 2)
        return cmd_cluster_restore(argv[1]);
    if (argc != 3)
        return log_error_errno(-EINVAL, "usage: pitr-snap restore ID TARGET, or for a cluster "
                                        "snapshot: pitr-snap -c CONFIG restore ID");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    _cleanup_(cs_reader_freep) CsReader *rd = NULL;
    CsSnapshot s;
    int r = open_snapshot(argv[1], &repo, &s, &rd);
    if (r < 0)
        return r;
    if (strcmp(s.kind, "tree") != 0 && strcmp(s.kind, "stream") != 0) {
        r = log_error_errno(-EINVAL,
                            "snapshot %s is a %s\nHINT: restore a cluster snapshot with "
                            "pitr-snap -c CONFIG restore ID, a node's base backup with "
                            "pitr-agent restore",
                            s.id, s.kind);
        cs_snapshot_clear(&s);
        return r;
    }
    double t0 = mono_now();
    CsTreeStats ts = { 0 };
    if (strcmp(s.kind, "tree") == 0) {
        CsTreeRootAttr ra;
        bool has_ra = root_attr_from_json(json_object_get(s.meta, "root_attr"), &ra);
        r = cs_tree_restore(rd, &s.root, argv[2],
                            &(CsRestoreParams){ .is_overwrite_allowed = opt.force,
                                                .no_sync = opt.no_sync,
                                                .root_attr = has_ra ? &ra : NULL },
                            &ts);
    } else {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_CLOEXEC | (opt.force ? O_TRUNC : O_EXCL),
                      0600);
        if (fd < 0)
            r = log_error_errno(-errno, "could not create \"%s\": %m", argv[2]);
        else {
            r = cs_reader_write_fd(rd, &s.root, fd, false);
            if (r == 0 && !opt.no_sync && fsync(fd) < 0)
                r = -errno;
            close(fd);
            ts.bytes = s.root.size;
        }
    }
    double secs = mono_now() - t0;
    if (r == 0) {
        char a[32];
        if (opt.json)
            printf("{\"id\": \"%s\", \"bytes\": %" PRIu64 ", \"files\": %" PRIu64
                   ", \"seconds\": %.3f}\n",
                   s.id, ts.bytes, ts.files, secs);
        else
            printf("restored snapshot %s to \"%s\": %s in %.1f s (%.0f MB/s)\n", s.id, argv[2],
                   cli_size(ts.bytes, a, sizeof(a)), secs,
                   secs > 0 ? (double)ts.bytes / secs / 1e6 : 0.0);
    } else
        log_error_errno(r, "restore of snapshot %s failed: %m", s.id);
    cs_snapshot_clear(&s);
    return r;
}

static int cmd_cat(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        return log_error_errno(-EINVAL, "usage: pitr-snap cat ID [PATH]");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    _cleanup_(cs_reader_freep) CsReader *rd = NULL;
    CsSnapshot s;
    int r = open_snapshot(argv[1], &repo, &s, &rd);
    if (r < 0)
        return r;
    if (argc == 3) {
        /* A file inside a stored tree. */
        CsDirEntry e = { 0 };
        if ((r = cs_tree_lookup(rd, &s.root, argv[2], &e)) < 0)
            log_error_errno(r, "snapshot %s: \"%s\": %m", s.id, argv[2]);
        else if (e.type != CS_ENTRY_FILE)
            r = log_error_errno(-EISDIR, "snapshot %s: \"%s\" is not a regular file", s.id,
                                argv[2]);
        else if ((r = cs_reader_write_fd(rd, &e.content, STDOUT_FILENO, false)) < 0)
            log_error_errno(r, "could not read \"%s\" of %s: %m", argv[2], s.id);
        cs_dir_entry_clear(&e);
    } else if (strcmp(s.kind, "stream") != 0) {
        r = log_error_errno(-EINVAL,
                            "snapshot %s is a %s, not a stream\nHINT: give a PATH inside it, or "
                            "use restore",
                            s.id, s.kind);
    } else if ((r = cs_reader_write_fd(rd, &s.root, STDOUT_FILENO, false)) < 0)
        log_error_errno(r, "could not read stream %s: %m", s.id);
    cs_snapshot_clear(&s);
    return r;
}

/* The node that cluster snapshot `s` restores from base backup `base_id`, or NULL when it
 * restores none from it (the agents find a node's base backup by its record's id). */
static const char *node_restored_from(const CsSnapshot *s, const char *base_id)
{
    if (strcmp(s->kind, ORCH_SNAPSHOT_KIND) != 0)
        return NULL;
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(s->meta, "nodes"), i, o) {
        const char *base = json_string_value(json_object_get(o, "base_backup"));
        if (base && strcmp(base, base_id) == 0) {
            const char *node = json_string_value(json_object_get(o, "name"));
            return node ? node : "?";
        }
    }
    return NULL;
}

/* "<id> (\"<name>\", node <node>), ..." for the cluster snapshots of `cat` that need snapshot
 * `id`; NULL with *ret_n = 0 when none do. */
static int describe_dependents(const CsCatalog *cat, const char *id, char **ret, size_t *ret_n)
{
    _cleanup_(buf_free) Buf text = BUF_INIT;
    size_t n = 0;
    for (size_t i = 0; i < cat->n_snaps; i++) {
        const CsSnapshot *s = &cat->snaps[i];
        const char *node = node_restored_from(s, id);
        if (!node)
            continue;
        char line[256];
        int len = snprintf(line, sizeof(line), "%s%s (\"%s\", node %s)", n ? ", " : "", s->id,
                           s->name, node);
        if (buf_append(&text, line, (size_t)MIN(len, (int)sizeof(line) - 1)) < 0)
            return -ENOMEM;
        n++;
    }
    *ret_n = n;
    *ret = NULL;
    if (n && !(*ret = strndup((const char *)text.data, text.size)))
        return -ENOMEM;
    return 0;
}

/*
 * Deletes the snapshot record `spec` names. Refused without --force: a base backup that a kept
 * cluster snapshot restores a node from; any snapshot while a record that cannot be read might
 * be such a cluster snapshot; and a record that cannot be read itself (what it holds is
 * unknown).
 *
 * The check runs before orch_snapshot_delete takes the cluster lock. A create that could make a
 * cluster snapshot need this backup holds that lock from choosing its base backups until its
 * record is written, and delete gives up at once on a held lock, so such a create is either
 * seen by the check or makes the delete fail; only one that runs entirely between the check and
 * the lock (microseconds) would be missed.
 */
static int delete_from(CsRepo *repo, const CsCatalog *cat, const char *spec)
{
    /* A record that cannot be read is deleted by its full id, knowingly. */
    const CsCatalogProblem *target_problem = NULL;
    for (size_t i = 0; i < cat->n_problems; i++)
        if (strcmp(cat->problems[i].id, spec) == 0)
            target_problem = &cat->problems[i];
    const char *id = spec;
    char problem_text[128];
    if (target_problem && !opt.force)
        return log_error_errno(target_problem->error,
                               "snapshot record \"%s\" %s: what it holds is unknown\nHINT: "
                               "--force deletes it anyway",
                               target_problem->object,
                               cs_catalog_problem_text(target_problem, problem_text,
                                                       sizeof(problem_text)));
    if (!target_problem) {
        size_t index;
        const CsCatalogProblem *problem;
        int r = cs_catalog_resolve_or_log(cat, spec, &index, &problem);
        if (r < 0)
            return r;
        id = cat->snaps[index].id;
    }
    _cleanup_free_ char *dependents = NULL;
    size_t n_dependents;
    int r = describe_dependents(cat, id, &dependents, &n_dependents);
    if (r < 0)
        return r;
    size_t n_other_problems = cat->n_problems - (target_problem ? 1 : 0);
    if (n_dependents && !opt.force)
        return log_error_errno(-EPERM,
                               "snapshot %s is the base backup of %zu kept cluster snapshot%s: %s"
                               "\nHINT: delete %s first; --force deletes it anyway, and %s can "
                               "then no longer be restored",
                               id, n_dependents, n_dependents == 1 ? "" : "s", dependents,
                               n_dependents == 1 ? "it" : "them",
                               n_dependents == 1 ? "it" : "they");
    if (n_other_problems && !opt.force) {
        cs_catalog_log_problems(cat);
        return log_error_errno(cs_catalog_problems_error(cat),
                               "cannot tell whether a cluster snapshot needs snapshot %s while "
                               "%zu snapshot record%s cannot be read\nHINT: --force deletes it "
                               "anyway",
                               id, n_other_problems, n_other_problems == 1 ? "" : "s");
    }
    if (n_dependents)
        log_warning("%zu cluster snapshot%s can no longer be restored: %s; %s restore%s a node "
                    "from base backup %s, deleted now",
                    n_dependents, n_dependents == 1 ? "" : "s", dependents,
                    n_dependents == 1 ? "it" : "they", n_dependents == 1 ? "s" : "", id);
    if (target_problem) {
        if ((r = cs_catalog_delete(repo, id)) < 0)
            return log_error_errno(r, "could not delete snapshot record \"%s\": %m",
                                   target_problem->object);
    } else {
        char deleted[2 * CS_SNAP_ID_SIZE + 1];
        if ((r = orch_snapshot_delete(repo, id, deleted)) < 0)
            return r;
    }
    log_info("deleted snapshot %s; the data it used stays in the packs (this version has no "
             "prune to reclaim it)",
             id);
    return 0;
}

static int cmd_delete(int argc, char **argv)
{
    if (argc != 2)
        return log_error_errno(-EINVAL, "usage: pitr-snap delete ID [--force]");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(false, &repo);
    if (r < 0)
        return r;
    CsCatalog cat;
    if ((r = cs_catalog_load(repo, &cat)) < 0)
        return log_error_errno(r, "could not read the snapshot list: %m");
    r = delete_from(repo, &cat, argv[1]);
    cs_catalog_clear(&cat);
    return r;
}

static int cmd_info(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-snap info");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0)
        return r;
    CsIndexStats st;
    if ((r = cs_index_stats(repo->index, &st)) < 0)
        return r;
    const CsRepoConfig *c = &repo->config;
    if (opt.json) {
        printf("{\"format_version\": %u, \"chunks\": %" PRIu64 ", \"chunk_bytes\": %" PRIu64
               ", \"packs\": %" PRIu64 ", \"pack_bytes\": %" PRIu64 "}\n",
               c->format_version, st.chunks, st.chunk_bytes, st.packs, st.pack_bytes);
        return 0;
    }
    char a[32], b[32];
    printf("location:       %s\nformat version: %u\nchunker:        %u / %u / %u bytes\n"
           "page size:      %u\ncompression:    zstd %d\nunique chunks:  %" PRIu64 " (%s)\n"
           "packs:          %" PRIu64 " (%s)\n",
           cs_backend_location(repo->backend), c->format_version, c->chunker.min_size,
           c->chunker.avg_size, c->chunker.max_size, c->page_size, c->zstd_level, st.chunks,
           cli_size(st.chunk_bytes, a, sizeof(a)), st.packs, cli_size(st.pack_bytes, b, sizeof(b)));
    return 0;
}

/* The effective configuration as JSON (orchestrator/config.h), with --json or without. */
static int config_show(void)
{
    json_t *o = orch_config_to_json(opt.config);
    if (!o)
        return log_error_errno(-ENOMEM, "could not show the configuration: %m");
    cli_print_json(o);
    json_decref(o);
    return 0;
}

/* config check is snap-cluster.c's. */
static int cmd_config_show_or_check(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "show") == 0 && opt.config)
        return config_show();
    return cmd_config(argc, argv);
}

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} verbs[] = {
    { "init", cmd_init },       { "key", cmd_key },   { "store", cmd_store },
    { "list", cmd_list },       { "show", cmd_show }, { "restore", cmd_restore },
    { "cat", cmd_cat },         { "delete", cmd_delete }, { "info", cmd_info },
    { "create", cmd_create },   { "config", cmd_config_show_or_check },
    { "barrier-sql", cmd_barrier_sql },
};

static int parse_u32(const char *s, uint32_t *ret)
{
    unsigned long long v;
    if (parse_unsigned(s, 0, UINT32_MAX, &v) < 0)
        return log_error_errno(-EINVAL, "invalid number \"%s\"", s);
    *ret = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_PASSFILE = 256, O_KEYFILE, O_NAME, O_JSON, O_STDIN, O_FORCE, O_NOSYNC, O_PAGEFILES,
           O_CMIN, O_CAVG, O_CMAX, O_PAGESIZE, O_COMP, O_PACKSIZE, O_SCRYPTN, O_LABEL,
           O_PARALLEL, O_RP_ONLY, O_TARGET_DIR, O_PARENT, O_FULL_READ, O_LOCK_TIMEOUT,
           O_BARRIER_DEADLINE, O_GROUP };
    static const struct option longopts[] = {
        { "repo", required_argument, NULL, 'r' },
        { "config", required_argument, NULL, 'c' },
        { "label", required_argument, NULL, O_LABEL },
        { "parallel", required_argument, NULL, O_PARALLEL },
        { "restore-point-only", no_argument, NULL, O_RP_ONLY },
        { "lock-timeout", required_argument, NULL, O_LOCK_TIMEOUT },
        { "barrier-deadline", required_argument, NULL, O_BARRIER_DEADLINE },
        { "target-dir", required_argument, NULL, O_TARGET_DIR },
        { "passphrase-file", required_argument, NULL, O_PASSFILE },
        { "key-file", required_argument, NULL, O_KEYFILE },
        { "name", required_argument, NULL, O_NAME },
        { "threads", required_argument, NULL, 'j' },
        { "json", no_argument, NULL, O_JSON },
        { "stdin", no_argument, NULL, O_STDIN },
        { "force", no_argument, NULL, O_FORCE },
        { "no-sync", no_argument, NULL, O_NOSYNC },
        { "page-files", required_argument, NULL, O_PAGEFILES },
        { "parent", required_argument, NULL, O_PARENT },
        { "full-read", no_argument, NULL, O_FULL_READ },
        { "chunk-min", required_argument, NULL, O_CMIN },
        { "chunk-avg", required_argument, NULL, O_CAVG },
        { "chunk-max", required_argument, NULL, O_CMAX },
        { "page-size", required_argument, NULL, O_PAGESIZE },
        { "compression", required_argument, NULL, O_COMP },
        { "pack-size", required_argument, NULL, O_PACKSIZE },
        { "scrypt-n", required_argument, NULL, O_SCRYPTN },
        { "group", required_argument, NULL, O_GROUP },
        { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {},
    };
    malloc_policy_for_backup();
    log_set_program("pitr-snap");
    opt.repo = getenv("PITR_REPO");
    opt.config_path = getenv("PITR_CONFIG");
    int c, r = 0;
    uint32_t u;
    static const char optstring[] = ":c:r:j:qvhV";
    opterr = 0; /* cli_option_error says it in one line, with a hint */
    while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
        switch (c) {
        case 'r': opt.repo = optarg; break;
        case 'c': opt.config_path = optarg; break;
        case O_LABEL: opt.label = optarg; break;
        case O_PARALLEL: r = parse_u32(optarg, &opt.parallel); break;
        case O_RP_ONLY: opt.restore_point_only = true; break;
        case O_LOCK_TIMEOUT: opt.lock_timeout = optarg; break;
        case O_BARRIER_DEADLINE: opt.barrier_deadline = optarg; break;
        case O_TARGET_DIR: opt.target_dir = optarg; break;
        case O_PASSFILE: opt.key.passphrase_file = optarg; break;
        case O_KEYFILE: opt.key.keyfile = optarg; break;
        case O_NAME: opt.name = optarg; break;
        case 'j': r = parse_u32(optarg, &opt.threads); break;
        case O_JSON: opt.json = true; break;
        case O_STDIN: opt.is_stdin = true; break;
        case O_FORCE: opt.force = true; break;
        case O_NOSYNC: opt.no_sync = true; break;
        case O_PAGEFILES: opt.page_files = optarg; break;
        case O_PARENT: opt.parent = optarg; break;
        case O_FULL_READ: opt.full_read = true; break;
        case O_CMIN: r = parse_u32(optarg, &opt.init.config.chunker.min_size); break;
        case O_CAVG: r = parse_u32(optarg, &opt.init.config.chunker.avg_size); break;
        case O_CMAX: r = parse_u32(optarg, &opt.init.config.chunker.max_size); break;
        case O_PAGESIZE: r = parse_u32(optarg, &opt.init.config.page_size); break;
        case O_COMP:
            r = parse_u32(optarg, &u);
            opt.init.config.zstd_level = (int)u;
            break;
        case O_PACKSIZE: r = parse_u32(optarg, &opt.init.config.pack_size); break;
        case O_SCRYPTN:
            r = parse_u32(optarg, &u);
            opt.init.scrypt_n = u;
            break;
        case O_GROUP: opt.init.group = optarg; break;
        case 'q': log_set_level(LOG_LEVEL_ERROR); break;
        case 'v': log_set_level(LOG_LEVEL_DEBUG); break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("pitr-snap %s\n", PITR_VERSION); return EXIT_OK;
        default: cli_option_error(c, argv, optstring, longopts, "pitr-snap"); return EXIT_USAGE;
        }
        if (r < 0)
            return EXIT_USAGE;
    }
    if (optind >= argc) {
        log_error("no command given\nHINT: see pitr-snap --help");
        return EXIT_USAGE;
    }
    if ((r = load_config()) < 0)
        return exit_code_from_errno(r);
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(argv[optind], verbs[i].name) == 0) {
            r = verbs[i].fn(argc - optind, argv + optind);
            orch_config_free(opt.config);
            return exit_code_from_errno(r);
        }
    orch_config_free(opt.config);
    log_error("unknown command \"%s\"\nHINT: see pitr-snap --help", argv[optind]);
    return EXIT_USAGE;
}
