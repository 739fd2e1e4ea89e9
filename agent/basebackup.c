#include <errno.h>
#include <stdlib.h>

#include "agent/basebackup.h"
#include "common/log.h"

int agent_backup(CsRepo *repo, const AgentBackupParams *params, AgentBackupResult *ret)
{
    (void)repo;
    (void)params;
    (void)ret;
    return log_error_errno(-ENOSYS, "base backups are not built yet");
}

void agent_backup_result_clear(AgentBackupResult *r)
{
    for (size_t i = 0; i < r->n_checksum_failures_kept; i++)
        free(r->checksum_failures[i].file);
    free(r->checksum_failures);
    *r = (AgentBackupResult){ 0 };
}
