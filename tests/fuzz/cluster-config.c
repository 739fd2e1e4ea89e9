/*
 * The cluster configuration, pitr.yaml (orchestrator/config.h), through orch_config_load, and
 * the effective configuration `config show --json` prints (orch_config_to_json).
 *
 * Input: the YAML text, written to a file.
 *
 * Promises checked: no crash, leak or undefined behaviour; a file either loads or is refused
 * with -EINVAL; a loaded configuration has a cluster name, a repository, at least one node and
 * its one coordinator, every node with a name, a connection string and an agent address, and
 * it prints as JSON.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "orchestrator/config.h"
#include "tests/fuzz/fuzz-common.h"

static char path[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(path, sizeof(path), "%s/pitr.yaml", fuzz_scratch_dir());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(fuzz_write_file(path, data, size) == 0);
    OrchConfig *cfg = NULL;
    int r = orch_config_load(path, &cfg);
    FUZZ_CHECK(r == 0 || r == -EINVAL);
    if (r < 0)
        return 0;
    FUZZ_CHECK(cfg->cluster && cfg->repo_location && cfg->n_nodes >= 1);
    FUZZ_CHECK(cfg->coordinator < cfg->n_nodes);
    FUZZ_CHECK(cfg->nodes[cfg->coordinator].role == ORCH_ROLE_COORDINATOR);
    FUZZ_CHECK(orch_config_coordinator(cfg) == &cfg->nodes[cfg->coordinator]);
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        const OrchNode *node = &cfg->nodes[i];
        FUZZ_CHECK(node->name && node->conninfo && node->agent && node->agent_host);
        FUZZ_CHECK(orch_config_find_node(cfg, node->name) == node);
        FUZZ_CHECK(i == cfg->coordinator || node->role == ORCH_ROLE_WORKER);
    }
    json_t *j = orch_config_to_json(cfg);
    FUZZ_CHECK(j);
    char *text = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(text);
    free(text);
    json_decref(j);
    orch_config_free(cfg);
    return 0;
}
