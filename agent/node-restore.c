#include "agent/node-restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/basebackup.h"
#include "chunkstore/catalog.h"
#include "common/buf.h"
#include "common/conf-setting.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

/* The base backup to restore: "latest" is the newest of the node; anything else must name a
 * base backup of this node. */
static int find_backup(CsRepo *repo, const AgentRestoreParams *p, CsSnapshot *ret)
{
    if (strcmp(p->backup, "latest") == 0) {
        int r = agent_backup_find_latest(repo, p->node, ret);
        if (r == -ENOENT)
            log_error("node %s has no base backup in the repository", p->node);
        return r;
    }
    int r = cs_catalog_find_or_log(repo, p->backup, ret);
    if (r < 0)
        return r;
    if (strcmp(ret->kind, AGENT_BASEBACKUP_KIND) != 0 || strcmp(ret->name, p->node) != 0) {
        log_error("snapshot %s is a %s of \"%s\", not a base backup of node %s", ret->id,
                  ret->kind, ret->name, p->node);
        cs_snapshot_clear(ret);
        return -ENOENT;
    }
    return 0;
}

static bool dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool is_empty = true;
    while (is_empty && (de = readdir(d)))
        is_empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return is_empty;
}

/* A server running on the target would see its files change under it. */
static int check_not_running(const char *target)
{
    _cleanup_free_ char *pidfile = path_join(target, "postmaster.pid"), *text = NULL;
    if (!pidfile)
        return -ENOMEM;
    if (read_file(pidfile, 4096, &text, NULL) < 0)
        return 0;
    long pid = strtol(text, NULL, 10);
    if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
        return log_error_errno(-EBUSY,
                               "PostgreSQL (pid %ld) is running in \"%s\": stop it first", pid,
                               target);
    return 0;
}

/* Single quotes for a shell word. */
static int shell_quote(Buf *out, const char *s)
{
    int r = buf_append(out, "'", 1);
    for (const char *p = s; r == 0 && *p; p++)
        r = *p == '\'' ? buf_append(out, "'\\''", 4) : buf_append(out, p, 1);
    return r < 0 ? r : buf_append(out, "'", 1);
}

static int default_restore_command(const AgentRestoreParams *p, char **ret)
{
    /* The key file unlocking this agent, by option or by environment (keysource.c). */
    const char *keyfile = p->keyfile ? p->keyfile : getenv("PITR_KEY_FILE");
    if (!p->repo_location || !keyfile)
        return log_error_errno(-EINVAL,
                               "the server's restore_command needs a key file: give --key-file "
                               "(PostgreSQL cannot answer a passphrase prompt)");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -errno;
    exe[n] = 0;
    /* The repository's location may be written as a file:// URL (backend-local.c). */
    const char *dir = p->repo_location;
    if (strncmp(dir, "file://", 7) == 0)
        dir += 7;
    _cleanup_free_ char *repo = realpath(dir, NULL);
    _cleanup_free_ char *key = realpath(keyfile, NULL);
    if (!repo || !key)
        return log_error_errno(-errno, "could not resolve the repository or key file path: %m");
    _cleanup_(buf_free) Buf b = BUF_INIT;
    const char *words[] = { exe, "-q", "-r", repo, "--key-file", key, "-n", p->node };
    int r = 0;
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(words); i++)
        if ((r = shell_quote(&b, words[i])) == 0)
            r = buf_append(&b, " ", 1);
    if (r == 0)
        r = buf_append(&b, "restore-wal %f %p", strlen("restore-wal %f %p") + 1);
    if (r < 0)
        return r;
    *ret = (char *)TAKE_PTR(b.data);
    return 0;
}

static int write_owned(const char *path, const void *p, size_t n, const CsDirEntry *owner)
{
    int r = write_file_atomic(path, p, n, 0600);
    if (r == 0 && geteuid() == 0 && chown(path, owner->uid, owner->gid) < 0)
        r = -errno;
    return r;
}

/* restore_command: the caller's, or made by default_restore_command(). */
static int write_recovery_settings(const AgentRestoreParams *p, const char *restore_command,
                                   const CsDirEntry *pgdata)
{
    int r = 0;
    _cleanup_free_ char *conf_path = path_join(p->target, "postgresql.auto.conf");
    _cleanup_free_ char *signal_path = path_join(p->target, "recovery.signal");
    _cleanup_free_ char *standby = path_join(p->target, "standby.signal");
    if (!conf_path || !signal_path || !standby)
        return -ENOMEM;
    _cleanup_(buf_free) Buf conf = BUF_INIT;
    char *old = NULL;
    size_t old_n = 0;
    if (read_file(conf_path, 64 << 20, &old, &old_n) == 0) {
        r = conf_append_without_recovery(&conf, old, old_n);
        free(old);
    }
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    if (r == 0)
        r = buf_printf(&conf, "# recovery settings written by pitr-agent restore at %s\n", when);
    if (r == 0)
        r = conf_append_setting(&conf, "restore_command", restore_command);
    /* PostgreSQL's setting for each target kind; "latest" sets none. */
    static const char *const target_keys[] = {
        [AGENT_TARGET_NAME] = "recovery_target_name",
        [AGENT_TARGET_LSN] = "recovery_target_lsn",
        [AGENT_TARGET_TIME] = "recovery_target_time",
        [AGENT_TARGET_IMMEDIATE] = "recovery_target",
    };
    const char *key = target_keys[p->target_kind];
    if (r == 0 && key)
        r = conf_append_setting(&conf, key,
                                p->target_kind == AGENT_TARGET_IMMEDIATE ? "immediate"
                                                                         : p->target_value);
    if (r == 0 && p->target_timeline) {
        char tli[16];
        snprintf(tli, sizeof(tli), "%u", p->target_timeline);
        r = conf_append_setting(&conf, "recovery_target_timeline", tli);
    }
    if (r == 0)
        r = conf_append_setting(&conf, "recovery_target_action", "promote");
    if (r == 0)
        r = write_owned(conf_path, conf.data, conf.size, pgdata);
    if (r == 0)
        r = write_owned(signal_path, "", 0, pgdata);
    if (r == 0 && unlink(standby) < 0 && errno != ENOENT)
        r = -errno;
    if (r < 0)
        return log_error_errno(r, "could not write the recovery settings in \"%s\": %m",
                               p->target);
    return 0;
}

typedef struct TablespaceTarget {
    const char *oid;
    const char *location; /* original */
    const char *path;     /* where it is restored */
} TablespaceTarget;

/* PostgreSQL recreates pg_tblspc/ links from tablespace_map when it starts from a backup:
 * point the mapped ones at their new place. */
static int rewrite_tablespace_map(const AgentRestoreParams *p, const TablespaceTarget *v,
                                  size_t n, const CsDirEntry *pgdata)
{
    _cleanup_free_ char *path = path_join(p->target, "tablespace_map");
    _cleanup_(buf_free) Buf out = BUF_INIT;
    int r = 0;
    for (size_t i = 0; r == 0 && i < n; i++)
        r = buf_printf(&out, "%s %s\n", v[i].oid, v[i].path);
    if (r == 0 && n)
        r = write_owned(path, out.data, out.size, pgdata);
    return r;
}

static int restore_tree(CsReader *rd, const CsSnapshot *snap, const char *inner,
                        const char *target, const AgentRestoreParams *p, CsTreeStats *stats,
                        CsDirEntry *ret_entry)
{
    CsDirEntry e = { 0 };
    int r = cs_tree_lookup(rd, &snap->root, inner, &e);
    if (r < 0)
        return log_error_errno(r, "base backup %s has no \"%s\": %m", snap->id, inner);
    CsTreeRootAttr attr = { .mode = e.mode, .uid = e.uid, .gid = e.gid,
                            .mtime_sec = e.mtime_sec, .mtime_nsec = e.mtime_nsec };
    r = cs_tree_restore(rd, &e.content, target,
                        &(CsRestoreParams){ .is_delta = p->delta,
                                            .threads = p->threads,
                                            .root_attr = &attr },
                        stats);
    if (r == 0 && ret_entry) {
        *ret_entry = e;
        e = (CsDirEntry){ 0 };
    }
    cs_dir_entry_clear(&e);
    return r;
}

int agent_node_restore(CsRepo *repo, const AgentRestoreParams *p, AgentRestoreResult *ret)
{
    double t0 = mono_now();
    *ret = (AgentRestoreResult){ 0 };
    if (p->target_kind != AGENT_TARGET_LATEST && p->target_kind != AGENT_TARGET_IMMEDIATE &&
        (!p->target_value || !*p->target_value))
        return log_error_errno(-EINVAL, "the recovery target needs a value");
    /* Everything that can refuse the restore is settled before the first byte is written:
     * a data directory laid down without the settings to recover it is worse than none. */
    _cleanup_free_ char *default_command = NULL;
    int r = p->restore_command ? 0 : default_restore_command(p, &default_command);
    if (r < 0)
        return r;
    const char *restore_command = p->restore_command ? p->restore_command : default_command;
    CsSnapshot snap = { 0 };
    r = find_backup(repo, p, &snap);
    if (r < 0)
        return r;

    /* Where every tablespace goes, checked before anything is written. */
    json_t *ts_list = json_object_get(snap.meta, "tablespaces");
    size_t n_ts = json_array_size(ts_list);
    TablespaceTarget *ts = calloc(n_ts + 1, sizeof(*ts));
    if (!ts)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < n_ts; i++) {
        json_t *o = json_array_get(ts_list, i);
        ts[i].oid = json_string_value(json_object_get(o, "oid"));
        ts[i].location = json_string_value(json_object_get(o, "location"));
        if (!ts[i].oid || !ts[i].location) {
            r = log_error_errno(-EBADMSG, "base backup %s: damaged tablespace list", snap.id);
            break;
        }
        ts[i].path = ts[i].location;
        for (size_t k = 0; k < p->n_tablespace_map; k++)
            if (strcmp(p->tablespace_map[k].oid, ts[i].oid) == 0 ||
                strcmp(p->tablespace_map[k].oid, ts[i].location) == 0)
                ts[i].path = p->tablespace_map[k].path;
    }
    for (size_t k = 0; r == 0 && k < p->n_tablespace_map; k++) {
        bool is_used = false;
        for (size_t i = 0; i < n_ts; i++)
            is_used |= strcmp(p->tablespace_map[k].oid, ts[i].oid) == 0 ||
                       strcmp(p->tablespace_map[k].oid, ts[i].location) == 0;
        if (!is_used)
            r = log_error_errno(-EINVAL, "base backup %s has no tablespace %s", snap.id,
                                p->tablespace_map[k].oid);
    }
    if (r == 0 && (r = check_not_running(p->target)) == 0 && !p->delta) {
        if (!dir_is_empty(p->target))
            r = log_error_errno(-ENOTEMPTY,
                                "target directory \"%s\" is not empty\nHINT: use --delta to "
                                "bring an existing copy up to date",
                                p->target);
        for (size_t i = 0; r == 0 && i < n_ts; i++)
            if (!dir_is_empty(ts[i].path))
                r = log_error_errno(-ENOTEMPTY,
                                    "tablespace %s: \"%s\" is not empty\nHINT: map it elsewhere "
                                    "with --tablespace-map=%s=DIR",
                                    ts[i].oid, ts[i].path, ts[i].oid);
    }

    CsReader *rd = NULL;
    CsDirEntry pgdata = { 0 };
    if (r == 0 && (r = cs_reader_new(repo, &rd)) < 0)
        log_error_errno(r, "could not read the repository: %m");
    if (r == 0)
        r = restore_tree(rd, &snap, "pgdata", p->target, p, &ret->tree, &pgdata);
    for (size_t i = 0; r == 0 && i < n_ts; i++) {
        _cleanup_free_ char *inner = NULL;
        if (asprintf(&inner, "tablespaces/%s", ts[i].oid) < 0) {
            r = -ENOMEM;
            break;
        }
        r = restore_tree(rd, &snap, inner, ts[i].path, p, &ret->tree, NULL);
    }
    if (r == 0 && n_ts)
        r = rewrite_tablespace_map(p, ts, n_ts, &pgdata);
    if (r == 0)
        r = write_recovery_settings(p, restore_command, &pgdata);
    if (r == 0) {
        memcpy(ret->snapshot_id, snap.id, sizeof(ret->snapshot_id));
        ret->bytes_written = ret->tree.bytes_written;
        ret->files_unchanged = ret->tree.files_unchanged;
        ret->files_removed = ret->tree.entries_removed;
        ret->seconds = mono_now() - t0;
        log_info("node %s: restored base backup %s into \"%s\"", p->node, snap.id, p->target);
    }
    cs_reader_free(rd);
    cs_dir_entry_clear(&pgdata);
    free(ts);
    cs_snapshot_clear(&snap);
    return r;
}
