/*
 * The libfuse side of the mount: the low-level operations table. Each operation is a short
 * adapter that unpacks the request, calls the pfs_* function doing the work (pfs.h, dir.h,
 * file.h; they return -errno) and sends the reply. The session's userdata is the PfsFs.
 *
 * Every operation that would change something answers EROFS (the mount is also made with the
 * "ro" flag, so the kernel refuses most of them before they get here). Extended attributes are
 * not stored: getxattr and listxattr are left to the kernel's ENOTSUP.
 *
 * FUSE_USE_VERSION is 3.12: the first API level with fuse_loop_cfg_* (Debian 12 has 3.14).
 */
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#endif
#include <fuse_lowlevel.h>

#include "fuse/pfs.h"

extern const struct fuse_lowlevel_ops pfs_ll_ops;
