#include "orchestrator/config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include <libpq-fe.h>

#include "agent/pq.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/macro.h"
#include "common/utf8.h"

/*
 * The file is loaded with libyaml's document API, then walked with a small table per mapping
 * (KeySpec: key, parser, field offset, required). The walk never stops at the first problem:
 * each one is logged with the position of the node it concerns and counted, so a user fixes
 * a file in one round instead of one error per run.
 */

#define NAME_MAX_LEN    63 /* cluster and node names become directory names and labels */
#define IDENT_MAX_LEN   63 /* NAMEDATALEN - 1 */
#define DURATION_MAX_MS (UINT64_C(24) * 3600 * 1000)

typedef struct Ctx {
    const char *file; /* as the caller gave it: messages quote what the user typed */
    char *dir;        /* absolute directory of the file, for relative paths */
    yaml_document_t doc;
    unsigned n_errors;
} Ctx;

_printf_(3, 4) static void conf_error(Ctx *c, const yaml_node_t *at, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* libyaml counts lines and columns from 0; editors count from 1. */
    log_error("%s:%zu:%zu: %s", c->file, at->start_mark.line + 1, at->start_mark.column + 1, msg);
    c->n_errors++;
}

static yaml_node_t *node_get(Ctx *c, int id)
{
    return yaml_document_get_node(&c->doc, id);
}

/* YAML 1.1 null as libyaml leaves it: the loader does not resolve plain scalars, so `key:`,
 * `key: ~` and `key: null` arrive as plain scalars that we recognise here. */
static bool node_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE)
        return false;
    if (n->tag && strcmp((const char *)n->tag, YAML_NULL_TAG) == 0)
        return true;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static const char *node_kind(const yaml_node_t *n)
{
    if (node_is_null(n))
        return "nothing";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a sequence";
    case YAML_SCALAR_NODE: return "a scalar";
    default: return "an empty node";
    }
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* The value of `key` in mapping `map`, or NULL. */
static yaml_node_t *mapping_get(Ctx *c, const yaml_node_t *map, const char *key)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_get(c, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp(scalar(k), key) == 0)
            return node_get(c, p->value);
    }
    return NULL;
}

/* --- value parsers: each reports its own problem and returns -EINVAL, or fills *dest --- */

typedef int (*ParseFn)(Ctx *c, const char *what, yaml_node_t *v, void *dest);

typedef struct KeySpec {
    const char *key;
    ParseFn parse;
    size_t offset; /* of the destination field in the struct the mapping fills */
    bool required;
} KeySpec;

static int want_scalar(Ctx *c, const char *what, const yaml_node_t *v)
{
    if (v->type == YAML_SCALAR_NODE)
        return 0;
    conf_error(c, v, "%s must be a scalar, found %s", what, node_kind(v));
    return -EINVAL;
}

static int parse_string(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    if (!*scalar(v)) {
        conf_error(c, v, "%s must not be empty", what);
        return -EINVAL;
    }
    char *s = strdup(scalar(v));
    if (!s)
        return -ENOMEM;
    *(char **)dest = s;
    return 0;
}

static bool is_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
            return false;
    return true;
}

/* Cluster and node names: they name directories in the mount and in the repository. */
static int parse_name(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    if (!is_name(scalar(v))) {
        conf_error(c, v,
                   "%s: bad name \"%s\" (expected 1 to %d characters of A-Z a-z 0-9 _ . -, "
                   "not \".\" or \"..\")",
                   what, scalar(v), NAME_MAX_LEN);
        return -EINVAL;
    }
    return parse_string(c, what, v, dest);
}

static bool is_url(const char *s)
{
    const char *p = strstr(s, "://");
    if (!p || p == s)
        return false;
    for (const char *q = s; q < p; q++)
        if (!isalnum((unsigned char)*q) && !strchr("+.-", *q))
            return false;
    return true;
}

/* A local path on the orchestrator's host: relative ones are taken from the file's directory,
 * so that a configuration and its keys can move together. */
static int parse_path(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    char *s = NULL;
    int r = parse_string(c, what, v, &s);
    if (r < 0)
        return r;
    if (s[0] != '/' && !is_url(s)) {
        char *abs = NULL;
        int k = asprintf(&abs, "%s/%s", c->dir, s);
        free(s);
        if (k < 0)
            return -ENOMEM;
        s = abs;
    }
    *(char **)dest = s;
    return 0;
}

/* pgdata lives on the node's host: a relative path would mean nothing there. */
static int parse_abs_path(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    if (scalar(v)[0] != '/') {
        conf_error(c, v,
                   "%s: \"%s\" is not an absolute path (expected the data directory's "
                   "path on the node's host)",
                   what, scalar(v));
        return -EINVAL;
    }
    return parse_string(c, what, v, dest);
}

static int parse_duration(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    if (orch_duration_parse(scalar(v), dest) < 0) {
        conf_error(c, v,
                   "%s: bad duration \"%s\" (expected a number with an optional unit ms, s, m "
                   "or h, e.g. 500ms, 5s, 2m; at least 1ms and at most 24h)",
                   what, scalar(v));
        return -EINVAL;
    }
    return 0;
}

static int parse_int64(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    const char *s = scalar(v);
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || isspace((unsigned char)*s) || *end || errno != 0) {
        conf_error(c, v,
                   "%s: bad integer \"%s\" (expected a whole number from %" PRId64 " to %" PRId64
                   ")",
                   what, s, INT64_MIN, INT64_MAX);
        return -EINVAL;
    }
    *(int64_t *)dest = (int64_t)x;
    return 0;
}

static int parse_adapter(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    if (orch_barrier_adapter_from_string(scalar(v), dest) < 0) {
        conf_error(c, v, "%s: unknown adapter \"%s\" (expected plain, citus or none)", what,
                   scalar(v));
        return -EINVAL;
    }
    return 0;
}

static int parse_role(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    for (OrchNodeRole r = 0; r < _ORCH_ROLE_MAX; r++)
        if (strcmp(scalar(v), orch_node_role_to_string(r)) == 0) {
            *(OrchNodeRole *)dest = r;
            return 0;
        }
    conf_error(c, v, "%s: unknown role \"%s\" (expected coordinator or worker)", what, scalar(v));
    return -EINVAL;
}

static bool is_ident(const char *s, size_t n)
{
    if (n == 0 || n > IDENT_MAX_LEN || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return false;
    return true;
}

/* The sequence name goes into SQL text (setup SQL, the application's example), so it is held
 * to unquoted identifiers: [schema.]name. */
static int parse_sequence(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    const char *s = scalar(v), *dot = strchr(s, '.');
    bool ok = dot ? is_ident(s, (size_t)(dot - s)) && is_ident(dot + 1, strlen(dot + 1))
                  : is_ident(s, strlen(s));
    if (!ok) {
        conf_error(c, v,
                   "%s: bad sequence name \"%s\" (expected [schema.]name, each an unquoted "
                   "SQL identifier of at most %d characters)",
                   what, s, IDENT_MAX_LEN);
        return -EINVAL;
    }
    return parse_string(c, what, v, dest);
}

static int parse_conninfo(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(scalar(v), &err);
    if (!opts) {
        if (!err)
            return -ENOMEM;
        conf_error(c, v, "%s: bad libpq connection string: %.*s", what, pq_message_len(err),
                   err);
        PQfreemem(err);
        return -EINVAL;
    }
    PQconninfoFree(opts);
    return parse_string(c, what, v, dest);
}

/* An agent address (orchestrator/agent-address.h); fills agent (normalized), agent_host and
 * agent_port of the OrchNode at dest. */
static int parse_agent(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    OrchNode *node = dest;
    if (want_scalar(c, what, v) < 0)
        return -EINVAL;
    OrchAgentAddress a;
    int r = orch_agent_address_parse(scalar(v), &a);
    if (r == -EINVAL)
        conf_error(c, v,
                   "%s: bad agent address \"%s\" (expected host[:port] or "
                   "[ipv6-address][:port], port 1 to 65535, default %d)",
                   what, scalar(v), ORCH_AGENT_DEFAULT_PORT);
    if (r < 0)
        return r;
    node->agent = a.normalized;
    node->agent_host = a.host;
    node->agent_port = a.port;
    return 0;
}

/* Walks one mapping against its table. `path` names it in messages ("" for the top level,
 * "barrier", "nodes[2]"); `base` is the struct the offsets point into. */
static int parse_mapping(Ctx *c, yaml_node_t *map, const char *path, const KeySpec *specs,
                         size_t n_specs, void *base)
{
    const char *where = *path ? path : "the top level";
    if (map->type != YAML_MAPPING_NODE) {
        conf_error(c, map, "%s must be a mapping, found %s", *path ? path : "the file",
                   node_kind(map));
        return 0;
    }
    const yaml_node_t *seen[16] = { 0 };
    assert(n_specs <= ARRAY_SIZE(seen));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_get(c, p->key), *v = node_get(c, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            conf_error(c, k, "keys in %s must be scalars, found %s", where, node_kind(k));
            continue;
        }
        size_t i = 0;
        while (i < n_specs && strcmp(specs[i].key, scalar(k)) != 0)
            i++;
        if (i == n_specs) {
            char expected[256] = "";
            for (size_t j = 0; j < n_specs; j++)
                snprintf(expected + strlen(expected), sizeof(expected) - strlen(expected), "%s%s",
                         j ? ", " : "", specs[j].key);
            conf_error(c, k, "unknown key \"%s\" in %s (expected %s)", scalar(k), where, expected);
            continue;
        }
        if (seen[i]) {
            conf_error(c, k, "duplicate key \"%s\" in %s (first at line %zu)", scalar(k), where,
                       seen[i]->start_mark.line + 1);
            continue;
        }
        seen[i] = k;
        char what[128];
        snprintf(what, sizeof(what), "%s%s%s", path, *path ? "." : "", scalar(k));
        if (node_is_null(v)) {
            if (specs[i].required)
                conf_error(c, k, "%s needs a value", what);
            continue; /* an optional key with no value: as if absent */
        }
        int r = specs[i].parse(c, what, v, (char *)base + specs[i].offset);
        if (r == -ENOMEM)
            return r;
    }
    for (size_t i = 0; i < n_specs; i++)
        if (specs[i].required && !seen[i])
            conf_error(c, map, "missing required key \"%s\" in %s", specs[i].key, where);
    return 0;
}

#define SPEC(k, fn, type, field, req)     \
    {                                     \
        k, fn, offsetof(type, field), req \
    }

static int parse_repository(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    static const KeySpec specs[] = {
        SPEC("location", parse_path, OrchConfig, repo_location, true),
        SPEC("key_file", parse_path, OrchConfig, repo_key_file, false),
        SPEC("passphrase_file", parse_path, OrchConfig, repo_passphrase_file, false),
    };
    OrchConfig *cfg = dest;
    int r = parse_mapping(c, v, what, specs, ARRAY_SIZE(specs), cfg);
    if (r == 0 && cfg->repo_key_file && cfg->repo_passphrase_file)
        conf_error(c, v,
                   "repository: key_file and passphrase_file exclude each other (give one, "
                   "or neither to use PITR_PASSPHRASE or a prompt)");
    return r;
}

static int parse_barrier(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    static const KeySpec specs[] = {
        SPEC("adapter", parse_adapter, OrchConfig, barrier_adapter, false),
        SPEC("lock_key", parse_int64, OrchConfig, barrier_lock_key, false),
        SPEC("timeout", parse_duration, OrchConfig, barrier_timeout_ms, false),
        SPEC("lock_timeout", parse_duration, OrchConfig, barrier_lock_timeout_ms, false),
        SPEC("deadline", parse_duration, OrchConfig, barrier_deadline_ms, false),
    };
    OrchConfig *cfg = dest;
    int r = parse_mapping(c, v, what, specs, ARRAY_SIZE(specs), cfg);
    if (r == 0 && cfg->barrier_lock_timeout_ms > cfg->barrier_deadline_ms)
        conf_error(c, v,
                   "barrier: lock_timeout (%" PRIu64 " ms) is longer than deadline (%" PRIu64
                   " ms): not one attempt would fit",
                   cfg->barrier_lock_timeout_ms, cfg->barrier_deadline_ms);
    return r;
}

static int parse_csn(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    static const KeySpec specs[] = {
        SPEC("sequence", parse_sequence, OrchConfig, csn_sequence, false),
    };
    return parse_mapping(c, v, what, specs, ARRAY_SIZE(specs), dest);
}

static int parse_tls(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    static const KeySpec specs[] = {
        SPEC("ca", parse_path, OrchConfig, tls_ca, false),
        SPEC("cert", parse_path, OrchConfig, tls_cert, false),
        SPEC("key", parse_path, OrchConfig, tls_key, false),
    };
    OrchConfig *cfg = dest;
    int r = parse_mapping(c, v, what, specs, ARRAY_SIZE(specs), cfg);
    if (r == 0 && v->type == YAML_MAPPING_NODE && !cfg->tls_cert != !cfg->tls_key)
        conf_error(c, v, "tls: cert and key go together (the client certificate and its key)");
    return r;
}

static int parse_nodes(Ctx *c, const char *what, yaml_node_t *v, void *dest)
{
    static const KeySpec specs[] = {
        SPEC("name", parse_name, OrchNode, name, true),
        SPEC("role", parse_role, OrchNode, role, true),
        SPEC("conninfo", parse_conninfo, OrchNode, conninfo, true),
        { "agent", parse_agent, 0, true },
        SPEC("pgdata", parse_abs_path, OrchNode, pgdata, false),
    };
    OrchConfig *cfg = dest;
    if (v->type != YAML_SEQUENCE_NODE) {
        conf_error(c, v, "%s must be a sequence of nodes, found %s", what, node_kind(v));
        return 0;
    }
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0) {
        conf_error(c, v, "%s must list at least one node", what);
        return 0;
    }
    cfg->nodes = calloc(n, sizeof(*cfg->nodes));
    if (!cfg->nodes)
        return -ENOMEM;
    cfg->n_nodes = n;

    size_t first_coord = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        OrchNode *node = &cfg->nodes[i];
        node->role = _ORCH_ROLE_MAX; /* unset: a missing role is reported, not defaulted */
        yaml_node_t *item = node_get(c, v->data.sequence.items.start[i]);
        if (!item)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "%s[%zu]", what, i);
        int r = parse_mapping(c, item, path, specs, ARRAY_SIZE(specs), node);
        if (r < 0)
            return r;

        if (node->name)
            for (size_t j = 0; j < i; j++)
                if (cfg->nodes[j].name && strcmp(cfg->nodes[j].name, node->name) == 0) {
                    yaml_node_t *first =
                            mapping_get(c, node_get(c, v->data.sequence.items.start[j]), "name");
                    conf_error(c, mapping_get(c, item, "name"),
                               "duplicate node name \"%s\" (first at line %zu; names must be "
                               "unique)",
                               node->name, first ? first->start_mark.line + 1 : 0);
                    break;
                }
        if (node->role == ORCH_ROLE_COORDINATOR) {
            if (first_coord == SIZE_MAX)
                first_coord = i;
            else {
                yaml_node_t *first = mapping_get(
                        c, node_get(c, v->data.sequence.items.start[first_coord]), "role");
                conf_error(c, mapping_get(c, item, "role"),
                           "a second coordinator (the first is at line %zu; exactly one node has "
                           "role: coordinator)",
                           first ? first->start_mark.line + 1 : 0);
            }
        }
    }
    if (first_coord == SIZE_MAX) {
        /* Say so only when every role was read: a node whose role was missing or wrong has
         * been reported already and might have been the coordinator. */
        bool all_roles = true;
        for (size_t i = 0; i < n; i++)
            all_roles = all_roles && cfg->nodes[i].role != _ORCH_ROLE_MAX;
        if (all_roles)
            conf_error(c, v,
                       "no coordinator among the nodes (exactly one node needs role: "
                       "coordinator)");
    } else
        cfg->coordinator = first_coord;
    return 0;
}

static int parse_top(Ctx *c, yaml_node_t *root, OrchConfig *cfg)
{
    static const KeySpec specs[] = {
        SPEC("cluster", parse_name, OrchConfig, cluster, true),
        { "repository", parse_repository, 0, true },
        { "barrier", parse_barrier, 0, false },
        { "csn", parse_csn, 0, false },
        SPEC("wal_timeout", parse_duration, OrchConfig, wal_timeout_ms, false),
        { "tls", parse_tls, 0, false },
        { "nodes", parse_nodes, 0, true },
    };
    return parse_mapping(c, root, "", specs, ARRAY_SIZE(specs), cfg);
}

/* Logs libyaml's parse error the way the rest of the file's problems read. */
static int report_yaml_error(Ctx *c, const yaml_parser_t *p)
{
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return log_error_errno(-ENOMEM, "%s: out of memory while parsing", c->file);
    case YAML_READER_ERROR:
        /* Encoding problems: libyaml knows the byte offset only. */
        log_error("%s: byte %zu: %s (the file must be UTF-8 text)", c->file, p->problem_offset,
                  p->problem ? p->problem : "unreadable input");
        return -EINVAL;
    default:
        if (p->context)
            log_error("%s:%zu:%zu: YAML syntax error: %s (%s at line %zu, column %zu)", c->file,
                      p->problem_mark.line + 1, p->problem_mark.column + 1,
                      p->problem ? p->problem : "unknown problem", p->context,
                      p->context_mark.line + 1, p->context_mark.column + 1);
        else
            log_error("%s:%zu:%zu: YAML syntax error: %s", c->file, p->problem_mark.line + 1,
                      p->problem_mark.column + 1, p->problem ? p->problem : "unknown problem");
        return -EINVAL;
    }
}

DEFINE_CLEANUP_FUNC(FILE *, fclose)

static int abs_dir_of(const char *path, char **ret)
{
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    char *dir = realpath(dirname(copy), NULL);
    if (!dir)
        return -errno;
    *ret = dir;
    return 0;
}

int orch_config_load(const char *path, OrchConfig **ret)
{
    _cleanup_(fclosep) FILE *f = fopen(path, "re");
    if (!f)
        return log_error_errno(-errno, "could not open configuration \"%s\": %m", path);
    struct stat st;
    if (fstat(fileno(f), &st) < 0)
        return log_error_errno(-errno, "could not stat configuration \"%s\": %m", path);
    if (S_ISDIR(st.st_mode))
        return log_error_errno(-EISDIR, "configuration \"%s\" is a directory", path);

    Ctx c = { .file = path };
    int r = abs_dir_of(path, &c.dir);
    if (r < 0)
        return log_error_errno(r, "could not resolve the directory of \"%s\": %m", path);
    _cleanup_free_ char *dir = c.dir;

    _cleanup_(orch_config_freep) OrchConfig *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return -ENOMEM;
    _cleanup_free_ char *base = strdup(path);
    if (!base)
        return -ENOMEM;
    if (asprintf(&cfg->path, "%s/%s", dir, basename(base)) < 0) {
        cfg->path = NULL;
        return -ENOMEM;
    }
    cfg->barrier_adapter = ORCH_BARRIER_PLAIN;
    cfg->barrier_lock_key = ORCH_BARRIER_DEFAULT_LOCK_KEY;
    cfg->barrier_timeout_ms = ORCH_BARRIER_DEFAULT_TIMEOUT_MS;
    cfg->barrier_lock_timeout_ms = ORCH_BARRIER_DEFAULT_LOCK_TIMEOUT_MS;
    cfg->barrier_deadline_ms = ORCH_BARRIER_DEFAULT_DEADLINE_MS;
    cfg->wal_timeout_ms = ORCH_WAL_DEFAULT_TIMEOUT_MS;

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &c.doc)) {
        r = report_yaml_error(&c, &parser);
        yaml_parser_delete(&parser);
        return r;
    }

    yaml_node_t *root = yaml_document_get_root_node(&c.doc);
    if (!root) {
        log_error("%s:1:1: empty configuration (expected a mapping with cluster, repository and "
                  "nodes)",
                  path);
        r = -EINVAL;
    } else
        r = parse_top(&c, root, cfg);

    /* One document per file: a second one is more likely a mistake than something to ignore. */
    if (r == 0) {
        yaml_document_t extra;
        if (!yaml_parser_load(&parser, &extra))
            r = report_yaml_error(&c, &parser);
        else {
            yaml_node_t *n = yaml_document_get_root_node(&extra);
            if (n) {
                log_error("%s:%zu:%zu: a second YAML document (expected one document only)", path,
                          extra.start_mark.line + 1, extra.start_mark.column + 1);
                c.n_errors++;
            }
            yaml_document_delete(&extra);
        }
    }
    yaml_document_delete(&c.doc);
    yaml_parser_delete(&parser);
    if (r < 0)
        return r;
    if (c.n_errors > 0) {
        log_error("%s: %u problem%s found", path, c.n_errors, c.n_errors == 1 ? "" : "s");
        return -EINVAL;
    }

    if (!cfg->csn_sequence) {
        cfg->csn_sequence = strdup(ORCH_CSN_DEFAULT_SEQUENCE);
        if (!cfg->csn_sequence)
            return -ENOMEM;
    }
    *ret = TAKE_PTR(cfg);
    return 0;
}

OrchConfig *orch_config_free(OrchConfig *cfg)
{
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        OrchNode *n = &cfg->nodes[i];
        free(n->name);
        free(n->conninfo);
        free(n->agent);
        free(n->agent_host);
        free(n->pgdata);
    }
    free(cfg->nodes);
    free(cfg->path);
    free(cfg->cluster);
    free(cfg->repo_location);
    free(cfg->repo_key_file);
    free(cfg->repo_passphrase_file);
    free(cfg->csn_sequence);
    free(cfg->tls_ca);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg);
    return NULL;
}

const OrchNode *orch_config_coordinator(const OrchConfig *cfg)
{
    return &cfg->nodes[cfg->coordinator];
}

const OrchNode *orch_config_find_node(const OrchConfig *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (strcmp(cfg->nodes[i].name, name) == 0)
            return &cfg->nodes[i];
    return NULL;
}

static const char *const adapter_names[_ORCH_BARRIER_MAX] = {
    [ORCH_BARRIER_PLAIN] = "plain",
    [ORCH_BARRIER_CITUS] = "citus",
    [ORCH_BARRIER_NONE] = "none",
};

const char *orch_barrier_adapter_to_string(OrchBarrierAdapter a)
{
    return a < _ORCH_BARRIER_MAX ? adapter_names[a] : "unknown";
}

int orch_barrier_adapter_from_string(const char *s, OrchBarrierAdapter *ret)
{
    for (OrchBarrierAdapter a = 0; a < _ORCH_BARRIER_MAX; a++)
        if (strcmp(s, adapter_names[a]) == 0) {
            *ret = a;
            return 0;
        }
    return -EINVAL;
}

const char *orch_node_role_to_string(OrchNodeRole r)
{
    switch (r) {
    case ORCH_ROLE_COORDINATOR: return "coordinator";
    case ORCH_ROLE_WORKER: return "worker";
    default: return "unknown";
    }
}

int orch_config_check_barrier(const OrchConfig *cfg, const char *lock_timeout_what,
                              const char *deadline_what)
{
    if (cfg->barrier_lock_timeout_ms <= cfg->barrier_deadline_ms)
        return 0;
    return log_error_errno(-EINVAL,
                           "%s (%" PRIu64 " ms) is longer than %s (%" PRIu64 " ms): not one "
                           "attempt to take the commit barrier would fit",
                           lock_timeout_what, cfg->barrier_lock_timeout_ms, deadline_what,
                           cfg->barrier_deadline_ms);
}

int orch_duration_parse(const char *s, uint64_t *ret_ms)
{
    /* Digits with at most one '.', checked by hand: strtod would also take "inf", "0x1p3",
     * leading blanks and signs. */
    size_t n = 0, dots = 0, digits = 0;
    for (; s[n] && (isdigit((unsigned char)s[n]) || s[n] == '.'); n++) {
        if (s[n] == '.')
            dots++;
        else
            digits++;
    }
    if (digits == 0 || dots > 1)
        return -EINVAL;
    const char *unit = s + n;
    double mult;
    if (!*unit || strcmp(unit, "s") == 0)
        mult = 1000;
    else if (strcmp(unit, "ms") == 0)
        mult = 1;
    else if (strcmp(unit, "m") == 0 || strcmp(unit, "min") == 0)
        mult = 60 * 1000;
    else if (strcmp(unit, "h") == 0)
        mult = 3600 * 1000;
    else
        return -EINVAL;
    char num[64];
    if (n >= sizeof(num))
        return -EINVAL;
    memcpy(num, s, n);
    num[n] = 0;
    double ms = strtod(num, NULL) * mult;
    if (!(ms >= 1) || ms > (double)DURATION_MAX_MS)
        return -EINVAL;
    *ret_ms = (uint64_t)(ms + 0.5); /* no libm for llround() */
    return 0;
}

/* --- JSON --- */

/* Text from outside (a path, a decoded conninfo) as a JSON string, its bytes that are not
 * UTF-8 written as \xHH (JSON cannot hold them); NULL as null. */
static json_t *json_text(const char *s)
{
    if (!s)
        return json_null();
    if (utf8_is_valid(s))
        return json_string(s);
    _cleanup_free_ char *e = utf8_escape(s);
    return e ? json_string(e) : NULL;
}

/* The connection string with any password masked, rebuilt as keyword=value pairs (a URI is
 * rebuilt the same way). Values are quoted as libpq reads them back. */
static char *conninfo_masked(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return strdup(conninfo);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) {
        PQconninfoFree(opts);
        return NULL;
    }
    bool first = true;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        const char *val = strcmp(o->keyword, "password") == 0 ? "********" : o->val;
        fprintf(f, "%s%s=", first ? "" : " ", o->keyword);
        first = false;
        bool quote = !*val || strpbrk(val, " \t\n'\\");
        if (quote)
            fputc('\'', f);
        for (const char *p = val; *p; p++) {
            if (quote && (*p == '\'' || *p == '\\'))
                fputc('\\', f);
            fputc(*p, f);
        }
        if (quote)
            fputc('\'', f);
    }
    PQconninfoFree(opts);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* A conninfo URI decodes its %XX escapes to bytes that need not be UTF-8
 * (postgresql://u%FF@host/db): shown with the escapes as written ("user=%FF"), its '%' are
 * escaped once more before it is parsed. */
static char *conninfo_shown(const char *conninfo)
{
    char *masked = conninfo_masked(conninfo);
    bool is_uri = strncmp(conninfo, "postgresql://", 13) == 0 ||
                  strncmp(conninfo, "postgres://", 11) == 0;
    if (!masked || utf8_is_valid(masked) || !is_uri)
        return masked;
    free(masked);
    _cleanup_free_ char *escaped = malloc(3 * strlen(conninfo) + 1);
    if (!escaped)
        return NULL;
    char *q = escaped;
    for (const char *p = conninfo; *p; p++)
        q = *p == '%' ? stpcpy(q, "%25") : (*q = *p, q + 1);
    *q = 0;
    return conninfo_masked(escaped);
}

json_t *orch_config_to_json(const OrchConfig *cfg)
{
    json_t *nodes = json_array();
    if (!nodes)
        return NULL;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        const OrchNode *n = &cfg->nodes[i];
        _cleanup_free_ char *ci = conninfo_shown(n->conninfo);
        if (!ci) {
            json_decref(nodes);
            return NULL;
        }
        json_t *o = json_pack("{s:o, s:s, s:o, s:o, s:o, s:i, s:o}", "name", json_text(n->name),
                              "role", orch_node_role_to_string(n->role), "conninfo",
                              json_text(ci), "agent", json_text(n->agent), "agent_host",
                              json_text(n->agent_host), "agent_port", (json_int_t)n->agent_port,
                              "pgdata", json_text(n->pgdata));
        if (!o || json_array_append_new(nodes, o) < 0) {
            json_decref(nodes);
            return NULL;
        }
    }
    return json_pack("{s:o, s:o, s:{s:o, s:o, s:o}, s:{s:s, s:I, s:I, s:I, s:I}, s:{s:o}, s:I, "
                     "s:{s:o, s:o, s:o}, s:o, s:o}",
                     "path", json_text(cfg->path), "cluster", json_text(cfg->cluster),
                     "repository", "location", json_text(cfg->repo_location), "key_file",
                     json_text(cfg->repo_key_file), "passphrase_file",
                     json_text(cfg->repo_passphrase_file), "barrier",
                     "adapter", orch_barrier_adapter_to_string(cfg->barrier_adapter), "lock_key",
                     (json_int_t)cfg->barrier_lock_key, "timeout_ms",
                     (json_int_t)cfg->barrier_timeout_ms, "lock_timeout_ms",
                     (json_int_t)cfg->barrier_lock_timeout_ms, "deadline_ms",
                     (json_int_t)cfg->barrier_deadline_ms, "csn", "sequence",
                     json_text(cfg->csn_sequence), "wal_timeout_ms", (json_int_t)cfg->wal_timeout_ms,
                     "tls", "ca", json_text(cfg->tls_ca), "cert", json_text(cfg->tls_cert), "key",
                     json_text(cfg->tls_key), "coordinator",
                     json_text(cfg->nodes[cfg->coordinator].name), "nodes", nodes);
}
