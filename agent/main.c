/*
 * pitr-agent: the PostgreSQL side of pitrfs. Parses options, opens the repository and calls one
 * agent/ function per verb; the logic lives in the library (agent/).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/basebackup.h"
#include "agent/node-restore.h"
#include "agent/service.h"
#include "agent/wal.h"
#include "chunkstore/catalog.h"
#include "chunkstore/keysource.h"
#include "common/exit-code.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/malloc-policy.h"
#include "common/parse.h"
#include "common/version.h"


typedef struct Options {
    const char *repo;
    const char *node;
    const char *passphrase_file;
    const char *keyfile;
    bool json;
    /* backup */
    const char *conninfo;
    const char *pgdata;
    const char *label;
    unsigned threads;
    unsigned archive_timeout_s;
    /* restore */
    const char *target_dir;
    AgentRecoveryTarget target_kind;
    uint32_t target_timeline;
    const char *target_value;
    bool delta;
    AgentTablespaceMap *ts_map;
    size_t n_ts_map;
    /* serve */
    const char *listen;
    const char *tls_cert, *tls_key, *tls_ca;
    const char *state_file;
    const char *pg_bin, *pg_log;
    unsigned max_connections, handshake_timeout_s;
} Options;

static Options opt;
static char hostname[256];

static void usage(FILE *f)
{
    fprintf(f,
            "pitr-agent backs up a PostgreSQL server into a pitrfs repository, archives and\n"
            "restores its WAL, and restores it to a point in time.\n\n"
            "Usage:\n"
            "  pitr-agent [OPTION]... backup [-d CONNINFO] [-D PGDATA] [--label L]\n"
            "  pitr-agent [OPTION]... restore [BACKUP] --target-dir DIR [RECOVERY TARGET] [--delta]\n"
            "  pitr-agent [OPTION]... archive-wal PATH FILENAME\n"
            "  pitr-agent [OPTION]... restore-wal FILENAME PATH\n"
            "  pitr-agent [OPTION]... wal-check\n"
            "  pitr-agent [OPTION]... serve [SERVE OPTION]...   (pitr-agent serve --help)\n\n"
            "In postgresql.conf:\n"
            "  archive_command = 'pitr-agent --key-file=F archive-wal %%p %%f'\n"
            "  restore_command = 'pitr-agent --key-file=F restore-wal %%f %%p'\n\n"
            "Repository and keys:\n"
            "  -r, --repo=LOCATION      repository directory (default: $PITR_REPO)\n"
            "      --key-file=F         unlock with a key file made by 'pitr-snap key export'\n"
            "                           (recommended: no scrypt on every WAL file)\n"
            "      --passphrase-file=F  read the passphrase from F (else $PITR_PASSPHRASE)\n"
            "  -n, --node=NAME          node the backups and WAL belong to (default: $PITR_NODE,\n"
            "                           else the host name)\n\n"
            "Backup:\n"
            "  -d, --dbname=CONNINFO    libpq connection string (default: libpq's PG* variables)\n"
            "  -D, --pgdata=DIR         data directory (default: the server's data_directory)\n"
            "      --label=L            backup label\n"
            "      --archive-timeout=S  fail if the backup's last WAL segment is not archived\n"
            "                           within S seconds (default 60)\n"
            "  -j, --threads=N          pipeline threads (default: one per CPU)\n\n"
            "Restore (BACKUP: a base backup id, unique prefix, or latest; default latest):\n"
            "      --target-dir=DIR     data directory to create (must be empty unless --delta)\n"
            "      --target-name=NAME   recover to the restore point NAME\n"
            "      --target-lsn=LSN     recover to the LSN\n"
            "      --target-time=TIME   recover to the time (PostgreSQL timestamp syntax)\n"
            "      --target-immediate   stop as soon as the backup is consistent\n"
            "                           (default: replay all archived WAL)\n"
            "      --target-timeline=N  the timeline the target lies on (default: the latest)\n"
            "      --delta              rewrite only what differs in an existing DIR\n"
            "      --tablespace-map=OID=DIR  restore tablespace OID into DIR (repeatable)\n\n"
            "Service: see pitr-agent serve --help\n\n"
            "Output:\n"
            "      --json               backup and wal-check: machine-readable report\n"
            "  -q, --quiet              errors only\n"
            "  -v, --verbose            debug messages\n"
            "  -h, --help               this help\n"
            "  -V, --version            version\n\n"
            "Exit status: 0 success, 1 failure (wal-check: gaps found), 2 wrong passphrase or\n"
            "key, 3 not a repository or unsupported format, 4 damaged data, a WAL header that\n"
            "does not match its name, or pages that fail their checksum during a backup,\n"
            "5 repository busy, 64 usage error. restore-wal exits 1, silently, when the file is\n"
            "not archived, and 128 plus the status above on any other failure, which makes\n"
            "PostgreSQL stop recovery rather than take it for the end of the archive.\n");
}

static void serve_usage(FILE *f)
{
    fprintf(f,
            "pitr-agent serve is the agent service: HTTP over mutual TLS for the orchestrator\n"
            "(pitr-snap -c CONFIG create and restore), with base backups and restores as jobs,\n"
            "PostgreSQL stop and start, status and /metrics. Run it as the PostgreSQL user.\n\n"
            "Usage:\n"
            "  pitr-agent -r REPO --key-file=F -D PGDATA [-d CONNINFO] [-n NODE] serve\n"
            "             --tls-cert=F --tls-key=F --tls-ca=F [SERVE OPTION]...\n\n"
            "Service:\n"
            "      --listen=ADDR:PORT   address to listen on (default: 0.0.0.0:18080)\n"
            "      --tls-cert=F         the agent's certificate (PEM, with intermediates)\n"
            "      --tls-key=F          its private key\n"
            "      --tls-ca=F           CA certificates that client certificates must chain to\n"
            "      --state-file=F       keep a JSON summary for monitoring in F\n"
            "      --pg-bin=DIR         PostgreSQL programs (default: pg_config --bindir)\n"
            "      --pg-log=F           server log for pg_ctl start (default:\n"
            "                           <parent of PGDATA>/<node>-postgres.log)\n"
            "      --max-connections=N  serve at most N connections at once (default 64, or\n"
            "                           half the open-file limit if that is less)\n"
            "      --handshake-timeout=S  close a connection whose TLS handshake has not\n"
            "                           finished after S seconds (default 5)\n\n"
            "Node and repository:\n"
            "  -D, --pgdata=DIR         the node's data directory (required)\n"
            "  -d, --dbname=CONNINFO    libpq connection string (default: libpq's PG* variables)\n"
            "  -n, --node=NAME          node name (default: $PITR_NODE, else the host name)\n"
            "  -r, --repo=LOCATION      repository directory (default: $PITR_REPO)\n"
            "      --key-file=F         a key file made by 'pitr-snap key export'; or\n"
            "      --passphrase-file=F  the passphrase in F, or $PITR_PASSPHRASE: the service\n"
            "                           cannot ask for one\n"
            "  -j, --threads=N          pipeline threads of a backup (default: one per CPU)\n\n"
            "Output:\n"
            "  -q, --quiet              errors only\n"
            "  -v, --verbose            debug messages\n\n"
            "Exit status: 0 after SIGTERM or SIGINT (a running job is waited for; a second\n"
            "signal exits at once), 1 failure, 2 wrong passphrase or key, 3 not a repository,\n"
            "64 usage error.\n");
}

static int open_repo(bool read_only, CsRepo **ret)
{
    if (!opt.repo)
        return log_error_errno(-EINVAL, "no repository given\nHINT: use --repo or PITR_REPO");
    return cs_repo_unlock(opt.repo, opt.passphrase_file, opt.keyfile,
                          &(CsOpenParams){ .read_only = read_only }, ret);
}

static int cmd_archive_wal(int argc, char **argv)
{
    if (argc != 3)
        return log_error_errno(-EINVAL, "usage: pitr-agent archive-wal PATH FILENAME");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    AgentWalArchiveResult res;
    int r = open_repo(false, &repo);
    if (r < 0)
        return r;
    return agent_wal_archive(repo, opt.node, argv[1], argv[2], &res);
}

static int cmd_restore_wal(int argc, char **argv)
{
    if (argc != 3)
        return log_error_errno(-EINVAL, "usage: pitr-agent restore-wal FILENAME PATH");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0)
        return r;
    return agent_wal_restore(repo, opt.node, argv[1], argv[2]);
}

DEFINE_CLEANUP_FUNC(AgentWalReport *, agent_wal_report_free)

static int cmd_wal_check(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-agent wal-check");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    _cleanup_(agent_wal_report_freep) AgentWalReport *report = NULL;
    int r = open_repo(true, &repo);
    if (r < 0 || (r = agent_wal_check(repo, opt.node, &report)) < 0)
        return r;
    if ((r = agent_wal_report_print(report, opt.json, stdout)) < 0)
        return log_error_errno(r, "could not print the report: %m");
    return agent_wal_report_status(report);
}

static void backup_progress(const AgentBackupProgress *p, void *userdata)
{
    (void)userdata;
    double mb = (double)p->bytes_done / 1e6;
    fprintf(stderr, "\r%8.0f / %.0f MB  %6.1f MB/s  %.0f MB new   ", mb,
            (double)p->bytes_total / 1e6, p->seconds > 0 ? mb / p->seconds : 0.0,
            (double)p->new_bytes / 1e6);
}

static int print_backup(const AgentBackupResult *res)
{
    if (!opt.json) {
        printf("base backup %s of node %s: %" PRIu64 " files, %.1f MB read, %.1f MB new, "
               "%.1f MB stored, %.1f s (%.0f MB/s)\n"
               "  start %s (%s), stop %s, timeline %u, system identifier %" PRIu64 "\n",
               res->snapshot_id, opt.node, res->tree.files, (double)res->tree.bytes / 1e6,
               (double)res->writer.new_bytes / 1e6, (double)res->writer.stored_bytes / 1e6,
               res->seconds, res->seconds > 0 ? (double)res->tree.bytes / 1e6 / res->seconds : 0,
               res->start_lsn, res->start_wal, res->stop_lsn, res->timeline,
               res->system_identifier);
        if (res->data_checksums)
            printf("  %" PRIu64 " pages verified, %" PRIu64 " checksum failures\n",
                   res->pages_checked, res->n_checksum_failures);
        return 0;
    }
    _cleanup_(json_decrefp) json_t *j = agent_backup_result_json(res, opt.node, SIZE_MAX);
    /* "id", as pitr-snap calls a snapshot's id */
    if (!j || json_object_set_new(j, "id", json_string(res->snapshot_id)) < 0)
        return -ENOMEM;
    return json_dumpf(j, stdout, JSON_INDENT(2)) < 0 || puts("") < 0 ? -EIO : 0;
}

static int cmd_backup(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-agent backup [-d CONNINFO] [-D PGDATA]");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    AgentBackupResult res = { 0 };
    int r = open_repo(false, &repo);
    if (r < 0)
        return r;
    bool is_tty = isatty(STDERR_FILENO) && log_get_level() >= LOG_LEVEL_INFO;
    r = agent_backup(repo,
                     &(AgentBackupParams){ .node = opt.node,
                                           .conninfo = opt.conninfo ? opt.conninfo : "",
                                           .pgdata = opt.pgdata,
                                           .label = opt.label,
                                           .threads = opt.threads,
                                           .archive_timeout_s = opt.archive_timeout_s,
                                           .progress = is_tty ? backup_progress : NULL },
                     &res);
    if (is_tty)
        fputs("\r\033[K", stderr);
    if (r == 0 || (r == -EIO && res.snapshot_id[0])) {
        int q = print_backup(&res);
        if (r == 0)
            r = q;
        else
            r = -EBADMSG; /* pages failed their checksum: exit 4, damaged data */
    }
    agent_backup_result_clear(&res);
    return r;
}

static int cmd_restore(int argc, char **argv)
{
    if (argc > 2)
        return log_error_errno(-EINVAL, "usage: pitr-agent restore [BACKUP] --target-dir DIR");
    if (!opt.target_dir)
        return log_error_errno(-EINVAL, "restore needs --target-dir");
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(true, &repo);
    if (r < 0)
        return r;
    AgentRestoreResult res = { 0 };
    r = agent_node_restore(repo,
                           &(AgentRestoreParams){ .node = opt.node,
                                                  .backup = argc == 2 ? argv[1] : "latest",
                                                  .target = opt.target_dir,
                                                  .target_kind = opt.target_kind,
                                                  .target_value = opt.target_value,
                                                  .target_timeline = opt.target_timeline,
                                                  .delta = opt.delta,
                                                  .repo_location = opt.repo,
                                                  .keyfile = opt.keyfile,
                                                  .tablespace_map = opt.ts_map,
                                                  .n_tablespace_map = opt.n_ts_map,
                                                  .threads = opt.threads },
                           &res);
    if (r < 0)
        return r;
    printf("restored base backup %s of node %s into %s: %" PRIu64 " files, %.1f MB written",
           res.snapshot_id, opt.node, opt.target_dir, res.tree.files,
           (double)res.bytes_written / 1e6);
    if (opt.delta)
        printf(", %" PRIu64 " files unchanged, %" PRIu64 " removed", res.files_unchanged,
               res.files_removed);
    printf(", %.1f s\nstart PostgreSQL on it to recover%s%s\n", res.seconds,
           opt.target_value ? " to " : "", opt.target_value ? opt.target_value : "");
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-agent serve --tls-cert F --tls-key F "
                                        "--tls-ca F -D PGDATA [--listen ADDR:PORT]");
    _cleanup_free_ char *address = NULL;
    uint16_t port;
    int r = agent_serve_parse_listen(opt.listen, &address, &port);
    if (r < 0)
        return r;
    return agent_serve(&(AgentServeParams){ .listen_address = address,
                                            .port = port,
                                            .tls_cert = opt.tls_cert,
                                            .tls_key = opt.tls_key,
                                            .tls_ca = opt.tls_ca,
                                            .state_file = opt.state_file,
                                            .node = opt.node,
                                            .pgdata = opt.pgdata,
                                            .conninfo = opt.conninfo,
                                            .repo = opt.repo,
                                            .keyfile = opt.keyfile,
                                            .passphrase_file = opt.passphrase_file,
                                            .pg_bin = opt.pg_bin,
                                            .pg_log = opt.pg_log,
                                            .threads = opt.threads,
                                            .max_connections = opt.max_connections,
                                            .handshake_timeout_s = opt.handshake_timeout_s });
}

static int set_target(AgentRecoveryTarget kind, const char *value)
{
    if (opt.target_kind != AGENT_TARGET_LATEST)
        return log_error_errno(-EINVAL, "give at most one recovery target");
    opt.target_kind = kind;
    opt.target_value = value;
    return 0;
}

static int add_tablespace_map(const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return log_error_errno(-EINVAL, "--tablespace-map wants OID=DIR, not \"%s\"", arg);
    AgentTablespaceMap *v = realloc(opt.ts_map, (opt.n_ts_map + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    opt.ts_map = v;
    v[opt.n_ts_map++] = (AgentTablespaceMap){ .oid = strndup(arg, (size_t)(eq - arg)),
                                              .path = eq + 1 };
    return v[opt.n_ts_map - 1].oid ? 0 : -ENOMEM;
}

/* PostgreSQL takes an exit status up to 125 of restore_command for "not archived" and ends
 * recovery there, promoting early when no target is set; above 125 it stops recovery. So
 * every failure of restore-wal but a missing file exits 128 plus its usual status. */
static int restore_wal_exit_code(int r)
{
    if (r == AGENT_WAL_NOT_ARCHIVED)
        return EXIT_FAIL;
    return r < 0 ? 128 + exit_code_from_errno(r) : EXIT_OK;
}

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    int (*exit_code)(int r); /* NULL: exit_code_from_errno */
} verbs[] = {
    { "archive-wal", cmd_archive_wal },
    { "restore-wal", cmd_restore_wal, restore_wal_exit_code },
    { "wal-check", cmd_wal_check },
    { "backup", cmd_backup },
    { "restore", cmd_restore },
    { "serve", cmd_serve },
};

/* A whole number from 1 to max for option `name`; -EINVAL (logged) otherwise. */
static int parse_count(const char *name, const char *what, const char *arg, unsigned long max,
                       unsigned *ret)
{
    unsigned long long n;
    if (parse_unsigned(arg, 1, max, &n) < 0) {
        log_error("%s wants %s from 1 to %lu, not \"%s\"", name, what, max, arg);
        return -EINVAL;
    }
    *ret = (unsigned)n;
    return 0;
}

/* getopt_long's '?' or ':' (opterr = 0, optstring starting with ':'): one line naming the
 * option as typed and why it was refused, and a hint, instead of getopt's message and the whole
 * help; as pitr-snap's cli_option_error(), which this layer cannot use. */
static void option_error(int c, char *const argv[], const char *optstring,
                         const struct option *longopts)
{
    /* A long option, and a short one that needs a value, is the argument just passed; an
     * unknown short one may sit inside a group (-qZ), so only optopt names it. getopt sets
     * optopt to 0 for an unknown long option and to the option's value for one given a value
     * it does not take. */
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    bool is_long = c == ':' ? strncmp(arg, "--", 2) == 0
                            : optopt == 0 || optopt > UCHAR_MAX || strchr(optstring, optopt);
    int name_len = (int)strcspn(arg, "=");
    char candidates[256] = "";
    size_t n = 0, used = 0;
    for (const struct option *o = longopts; is_long && c == '?' && !optopt && o->name; o++)
        if (name_len > 2 && strncmp(o->name, arg + 2, (size_t)name_len - 2) == 0) {
            int w = snprintf(candidates + used, sizeof(candidates) - used, "%s--%s",
                             n++ ? ", " : "", o->name);
            if (w > 0 && (size_t)w < sizeof(candidates) - used)
                used += (size_t)w;
        }
    if (!is_long)
        log_error(c == ':' ? "option '-%c' needs a value\nHINT: see pitr-agent --help"
                           : "unknown option '-%c'\nHINT: see pitr-agent --help",
                  optopt);
    else if (c == ':')
        log_error("option '%.*s' needs a value\nHINT: see pitr-agent --help", name_len, arg);
    else if (optopt)
        log_error("option '%.*s' takes no value\nHINT: see pitr-agent --help", name_len, arg);
    else if (n > 1)
        log_error("option '%.*s' is ambiguous: it could be %s\nHINT: see pitr-agent --help",
                  name_len, arg, candidates);
    else
        log_error("unknown option '%.*s'\nHINT: see pitr-agent --help", name_len, arg);
}

int main(int argc, char **argv)
{
    enum { O_PASSFILE = 256, O_KEYFILE, O_JSON, O_LABEL, O_TARGET_DIR, O_TARGET_NAME,
           O_TARGET_LSN, O_TARGET_TIME, O_TARGET_IMMEDIATE, O_TARGET_TLI, O_DELTA, O_TS_MAP, O_LISTEN,
           O_TLS_CERT, O_TLS_KEY, O_TLS_CA, O_STATE_FILE, O_PG_BIN, O_PG_LOG, O_ARCHIVE_TIMEOUT,
           O_MAX_CONNECTIONS, O_HANDSHAKE_TIMEOUT };
    static const struct option longopts[] = {
        { "repo", required_argument, NULL, 'r' },
        { "node", required_argument, NULL, 'n' },
        { "passphrase-file", required_argument, NULL, O_PASSFILE },
        { "key-file", required_argument, NULL, O_KEYFILE },
        { "json", no_argument, NULL, O_JSON },
        { "dbname", required_argument, NULL, 'd' },
        { "pgdata", required_argument, NULL, 'D' },
        { "label", required_argument, NULL, O_LABEL },
        { "archive-timeout", required_argument, NULL, O_ARCHIVE_TIMEOUT },
        { "threads", required_argument, NULL, 'j' },
        { "target-dir", required_argument, NULL, O_TARGET_DIR },
        { "target-name", required_argument, NULL, O_TARGET_NAME },
        { "target-lsn", required_argument, NULL, O_TARGET_LSN },
        { "target-time", required_argument, NULL, O_TARGET_TIME },
        { "target-immediate", no_argument, NULL, O_TARGET_IMMEDIATE },
        { "target-timeline", required_argument, NULL, O_TARGET_TLI },
        { "delta", no_argument, NULL, O_DELTA },
        { "tablespace-map", required_argument, NULL, O_TS_MAP },
        { "listen", required_argument, NULL, O_LISTEN },
        { "tls-cert", required_argument, NULL, O_TLS_CERT },
        { "tls-key", required_argument, NULL, O_TLS_KEY },
        { "tls-ca", required_argument, NULL, O_TLS_CA },
        { "state-file", required_argument, NULL, O_STATE_FILE },
        { "pg-bin", required_argument, NULL, O_PG_BIN },
        { "pg-log", required_argument, NULL, O_PG_LOG },
        { "max-connections", required_argument, NULL, O_MAX_CONNECTIONS },
        { "handshake-timeout", required_argument, NULL, O_HANDSHAKE_TIMEOUT },
        { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {},
    };
    malloc_policy_for_backup();
    log_set_program("pitr-agent");
    opt.repo = getenv("PITR_REPO");
    opt.node = getenv("PITR_NODE");
    static const char optstring[] = ":r:n:d:D:j:qvhV";
    opterr = 0; /* option_error says it in one line, with a hint */
    int c, r = 0;
    bool want_help = false;
    while (r == 0 && (c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
        switch (c) {
        case 'r': opt.repo = optarg; break;
        case 'n': opt.node = optarg; break;
        case O_PASSFILE: opt.passphrase_file = optarg; break;
        case O_KEYFILE: opt.keyfile = optarg; break;
        case O_JSON: opt.json = true; break;
        case 'd': opt.conninfo = optarg; break;
        case 'D': opt.pgdata = optarg; break;
        case O_LABEL: opt.label = optarg; break;
        case 'j': r = parse_count("--threads", "a number", optarg, 256, &opt.threads); break;
        case O_ARCHIVE_TIMEOUT:
            r = parse_count("--archive-timeout", "seconds", optarg, 86400, &opt.archive_timeout_s);
            break;
        case O_TARGET_DIR: opt.target_dir = optarg; break;
        case O_TARGET_NAME: r = set_target(AGENT_TARGET_NAME, optarg); break;
        case O_TARGET_LSN: r = set_target(AGENT_TARGET_LSN, optarg); break;
        case O_TARGET_TIME: r = set_target(AGENT_TARGET_TIME, optarg); break;
        case O_TARGET_IMMEDIATE: r = set_target(AGENT_TARGET_IMMEDIATE, NULL); break;
        case O_TARGET_TLI:
            r = parse_count("--target-timeline", "a timeline number", optarg, UINT32_MAX,
                            &opt.target_timeline);
            break;
        case O_DELTA: opt.delta = true; break;
        case O_TS_MAP: r = add_tablespace_map(optarg); break;
        case O_LISTEN: opt.listen = optarg; break;
        case O_TLS_CERT: opt.tls_cert = optarg; break;
        case O_TLS_KEY: opt.tls_key = optarg; break;
        case O_TLS_CA: opt.tls_ca = optarg; break;
        case O_STATE_FILE: opt.state_file = optarg; break;
        case O_PG_BIN: opt.pg_bin = optarg; break;
        case O_PG_LOG: opt.pg_log = optarg; break;
        case O_MAX_CONNECTIONS:
            r = parse_count("--max-connections", "a number", optarg, 1000000,
                            &opt.max_connections);
            break;
        case O_HANDSHAKE_TIMEOUT:
            r = parse_count("--handshake-timeout", "seconds", optarg, 3600,
                            &opt.handshake_timeout_s);
            break;
        case 'q': log_set_level(LOG_LEVEL_ERROR); break;
        case 'v': log_set_level(LOG_LEVEL_DEBUG); break;
        /* The command may come after --help: "pitr-agent serve --help" is serve's help. */
        case 'h': want_help = true; break;
        case 'V': printf("pitr-agent %s\n", PITR_VERSION); return EXIT_OK;
        default: option_error(c, argv, optstring, longopts); return EXIT_USAGE;
        }
    }
    if (r < 0)
        return EXIT_USAGE;
    if (want_help) {
        if (optind < argc && strcmp(argv[optind], "serve") == 0)
            serve_usage(stdout);
        else
            usage(stdout);
        return EXIT_OK;
    }
    if (optind >= argc) {
        log_error("no command given\nHINT: see pitr-agent --help");
        return EXIT_USAGE;
    }
    if (!opt.node || !*opt.node) {
        if (gethostname(hostname, sizeof(hostname) - 1) < 0 || !hostname[0]) {
            log_error("could not determine the host name\nHINT: use --node or PITR_NODE");
            return EXIT_USAGE;
        }
        opt.node = hostname;
    }
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(argv[optind], verbs[i].name) == 0) {
            r = verbs[i].fn(argc - optind, argv + optind);
            return verbs[i].exit_code ? verbs[i].exit_code(r) : exit_code_from_errno(r);
        }
    log_error("unknown command \"%s\"\nHINT: see pitr-agent --help", argv[optind]);
    return EXIT_USAGE;
}
