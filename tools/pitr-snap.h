/*
 * pitr-snap's parts: the repository verbs (pitr-snap.c) and the cluster verbs that work from
 * a configuration file (snap-cluster.c) share the options and the repository opening.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore/catalog.h"
#include "chunkstore/repo.h"
#include "orchestrator/config.h"
#include "tools/common/cli.h"

typedef struct Options {
    const char *repo;
    CliKeyOptions key;
    const char *name;
    unsigned threads;
    bool json;
    bool is_stdin;
    bool force;
    bool no_sync; /* restore: do not wait for the disk */
    const char *page_files; /* "auto" or "none" */
    const char *parent;     /* store: a snapshot id or name, "none", or NULL for automatic */
    bool full_read;         /* store: read every file, even unchanged ones */
    CsInitParams init;
    /* cluster */
    const char *config_path;
    OrchConfig *config; /* loaded when config_path is set */
    const char *label;
    unsigned parallel;
    bool restore_point_only;
    const char *lock_timeout;     /* create: overrides barrier.lock_timeout */
    const char *barrier_deadline; /* create: overrides barrier.deadline */
    const char *target_dir;
} Options;

extern Options opt;

int open_repo(bool read_only, CsRepo **ret);

/* snap-cluster.c */
int load_config(void);
int cmd_create(int argc, char **argv);
int cmd_cluster_restore(const char *spec);
int cmd_config(int argc, char **argv);
int cmd_barrier_sql(int argc, char **argv);
int cluster_delete(const char *spec);
/* One line of the cluster columns for `list`: CSN and per-node LSN@timeline. */
void print_cluster_list_line(const CsSnapshot *s);
/* The cluster part of `show`: CSN, restore point, barrier, and a line per node. */
void print_cluster_show(const CsSnapshot *s);
