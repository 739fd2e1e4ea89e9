#include "common/malloc-policy.h"

#include <malloc.h>

void malloc_policy_for_backup(void)
{
    mallopt(M_ARENA_MAX, 1);
}
