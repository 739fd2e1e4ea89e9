#include "fuse/kernel-readahead.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

/* mountinfo escapes space, tab, newline and backslash in paths as \ooo. */
static void unescape_octal(char *s)
{
    char *out = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *out++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
            p += 3;
        } else
            *out++ = *p;
    }
    *out = 0;
}

/* "MAJ:MIN" of the last FUSE mount on `mountpoint`, into dev (at least 32 bytes). */
static int find_device(const char *mountpoint, char *dev, size_t dev_size)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    int r = -ENOENT;
    while (getline(&line, &cap, f) > 0) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        char *save = NULL, *field[5];
        size_t n = 0;
        while (n < ARRAY_SIZE(field) && (field[n] = strtok_r(n ? NULL : line, " ", &save)))
            n++;
        char *sep = n == ARRAY_SIZE(field) ? strstr(save, " - ") : NULL;
        if (!sep || strncmp(sep + 3, "fuse", 4) != 0)
            continue;
        unescape_octal(field[4]);
        if (strcmp(field[4], mountpoint) == 0 && strlen(field[2]) < dev_size) {
            strcpy(dev, field[2]);
            r = 0;
        }
    }
    free(line);
    fclose(f);
    return r;
}

int pfs_kernel_readahead_set(const char *mountpoint, size_t bytes)
{
    char dev[32], path[96];
    int r = find_device(mountpoint, dev, sizeof(dev));
    if (r < 0)
        return r;
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
    FILE *f = fopen(path, "we");
    if (!f)
        return -errno;
    fprintf(f, "%zu\n", bytes / 1024);
    /* sysfs reports a refused value when the buffer is written out. */
    r = fflush(f) == 0 ? 0 : -errno;
    if (fclose(f) != 0 && r == 0)
        r = -errno;
    return r;
}
