/*
 * The kernel's read-ahead window on the mount. The kernel reads ahead of a sequential reader
 * in requests as large as this window, 128 KiB by default for every FUSE mount; each request
 * is a round trip through the daemon. A 1 MiB window cuts the round trips of a cold sequential
 * read eightfold (measured by hand, a cold read of an 806 MB pgbench file on a fresh mount:
 * 0.47-0.49 s with 1 MiB, 0.53-0.59 s with 128 KiB; 2 and 4 MiB were no faster than 1).
 *
 * A FUSE daemon can only lower the window in its INIT reply; raising it takes a write to
 * /sys/class/bdi/MAJ:MIN/read_ahead_kb, which only root may do. So: during INIT (the mount is
 * in the mount table by then, and the kernel applies the smaller of the sysfs value and the
 * reply's max_readahead once the reply arrives), write the sysfs value, then reply with the
 * same size.
 */
#pragma once

#include <stddef.h>

/* Set the read-ahead window of the FUSE mount at `mountpoint` (absolute, as mounted; the last
 * mount there counts) to `bytes`, rounded down to KiB. Returns 0, -ENOENT when the mount is
 * not in /proc/self/mountinfo, or the -errno of the sysfs write (-EACCES when not root). */
int pfs_kernel_readahead_set(const char *mountpoint, size_t bytes);
