#include "common/exit-code.h"

#include <errno.h>

int exit_code_from_errno(int r)
{
    switch (r) {
    case 0: return EXIT_OK;
    case -EKEYREJECTED: return EXIT_KEY;
    case -ENOMEDIUM:
    case -EPROTONOSUPPORT:
    case -EXDEV: return EXIT_NOT_REPO;
    case -EBADMSG: return EXIT_DAMAGED;
    case -EBUSY: return EXIT_BUSY;
    case -EREMOTEIO: return EXIT_NODES;
    case -ETIME: return EXIT_TEMPFAIL;
    case -EINVAL: return EXIT_USAGE;
    default: return EXIT_FAIL;
    }
}
