#include <errno.h>

#include "agent/node-restore.h"
#include "common/log.h"

int agent_node_restore(CsRepo *repo, const AgentRestoreParams *params, AgentRestoreResult *ret)
{
    (void)repo;
    (void)params;
    (void)ret;
    return log_error_errno(-ENOSYS, "node restore is not built yet");
}
