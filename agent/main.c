/*
 * pitr-agent: the PostgreSQL side of pitrfs. Parses options, opens the repository and calls one
 * agent/ function per verb; the logic lives in the library (agent/wal.c).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/wal.h"
#include "chunkstore/keysource.h"
#include "common/exit-code.h"
#include "common/log.h"
#include "common/version.h"
#include "common/macro.h"


typedef struct Options {
    const char *repo;
    const char *node;
    const char *passphrase_file;
    const char *keyfile;
    bool json;
} Options;

static Options opt;
static char hostname[256];

static void usage(FILE *f)
{
    fprintf(f,
            "pitr-agent archives and restores the WAL of a PostgreSQL server in a pitrfs "
            "repository.\n\n"
            "Usage:\n"
            "  pitr-agent [OPTION]... archive-wal PATH FILENAME\n"
            "  pitr-agent [OPTION]... restore-wal FILENAME PATH\n"
            "  pitr-agent [OPTION]... wal-check\n\n"
            "In postgresql.conf:\n"
            "  archive_command = 'pitr-agent --key-file=F archive-wal %%p %%f'\n"
            "  restore_command = 'pitr-agent --key-file=F restore-wal %%f %%p'\n\n"
            "Repository and keys:\n"
            "  -r, --repo=LOCATION      repository directory (default: $PITR_REPO)\n"
            "      --key-file=F         unlock with a key file made by 'pitr-snap key export'\n"
            "                           (recommended: no scrypt on every WAL file)\n"
            "      --passphrase-file=F  read the passphrase from F (else $PITR_PASSPHRASE)\n\n"
            "WAL:\n"
            "  -n, --node=NAME          node the WAL belongs to (default: $PITR_NODE, else the\n"
            "                           host name)\n\n"
            "Output:\n"
            "      --json               wal-check: machine-readable report\n"
            "  -q, --quiet              errors only\n"
            "  -v, --verbose            debug messages\n"
            "  -h, --help               this help\n"
            "  -V, --version            version\n\n"
            "Exit status: 0 success, 1 failure (restore-wal: also \"not archived\", silently;\n"
            "wal-check: gaps found), 2 wrong passphrase or key, 3 not a repository or\n"
            "unsupported format, 4 damaged data or a WAL header that does not match its name,\n"
            "5 repository busy, 64 usage error.\n");
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

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} verbs[] = {
    { "archive-wal", cmd_archive_wal },
    { "restore-wal", cmd_restore_wal },
    { "wal-check", cmd_wal_check },
};

int main(int argc, char **argv)
{
    enum { O_PASSFILE = 256, O_KEYFILE, O_JSON };
    static const struct option longopts[] = {
        { "repo", required_argument, NULL, 'r' },
        { "node", required_argument, NULL, 'n' },
        { "passphrase-file", required_argument, NULL, O_PASSFILE },
        { "key-file", required_argument, NULL, O_KEYFILE },
        { "json", no_argument, NULL, O_JSON },
        { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {},
    };
    log_set_program("pitr-agent");
    opt.repo = getenv("PITR_REPO");
    opt.node = getenv("PITR_NODE");
    int c;
    while ((c = getopt_long(argc, argv, "r:n:qvhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'r': opt.repo = optarg; break;
        case 'n': opt.node = optarg; break;
        case O_PASSFILE: opt.passphrase_file = optarg; break;
        case O_KEYFILE: opt.keyfile = optarg; break;
        case O_JSON: opt.json = true; break;
        case 'q': log_set_level(LOG_LEVEL_ERROR); break;
        case 'v': log_set_level(LOG_LEVEL_DEBUG); break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("pitr-agent %s\n", PITR_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
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
        if (strcmp(argv[optind], verbs[i].name) == 0)
            return exit_code_from_errno(verbs[i].fn(argc - optind, argv + optind));
    log_error("unknown command \"%s\"\nHINT: see pitr-agent --help", argv[optind]);
    return EXIT_USAGE;
}
