#include "fuse/fs.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "fuse/dir.h"
#include "fuse/file.h"
#include "fuse/kernel-readahead.h"

static inline PfsFs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static struct fuse_entry_param entry_param(const PfsAttr *a)
{
    return (struct fuse_entry_param){ .ino = a->ino,
                                      .attr = a->st,
                                      .attr_timeout = a->attr_timeout,
                                      .entry_timeout = a->entry_timeout };
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    PfsFs *fs = userdata;
    /* POSIX_ACL: the kernel enforces the stored ACLs (the mount uses default_permissions) and
     * serves them from getxattr. */
    const unsigned wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_READDIRPLUS |
                            FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_POSIX_ACL;
    conn->want |= conn->capable & wanted;
    /* Nothing ever changes; and readdirplus always, not only for the first batch of a
     * directory: "ls -l" of a large snapshot directory then needs no lookup per entry. */
    conn->want &= ~(unsigned)(FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS_AUTO);
    /* max_write (default: as large as libfuse's buffer, 1 MiB) also sets max_pages, the largest
     * read request; max_read stays 0 (no limit beyond that). Allow many read-ahead requests in
     * flight: the daemon decodes them in parallel. */
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->time_gran = 1;
    size_t ra = fs->params.kernel_readahead_bytes;
    if (ra > 0 && fs->params.mountpoint) {
        int r = pfs_kernel_readahead_set(fs->params.mountpoint, ra);
        if (r == 0)
            conn->max_readahead = (unsigned)MIN(ra, (size_t)UINT_MAX);
        else
            log_debug_errno(r, "the kernel's read-ahead stays at %u KiB: %m",
                            conn->max_readahead / 1024);
    }
}

static void op_destroy(void *userdata)
{
    pfs_fs_log_stats(userdata);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    PfsFs *fs = fs_of(req); /* a reply frees req: take what is needed first */
    PfsAttr a;
    int r = pfs_dir_lookup(fs, parent, name, &a);
    if (r == -ENOENT && a.entry_timeout > 0) {
        /* A name absent from an immutable directory: let the kernel remember that. */
        struct fuse_entry_param e = { .ino = 0, .entry_timeout = a.entry_timeout };
        return (void)fuse_reply_entry(req, &e);
    }
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    struct fuse_entry_param e = entry_param(&a);
    if (fuse_reply_entry(req, &e) != 0)
        pfs_fs_forget(fs, a.ino, 1); /* the kernel never got the reference */
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    pfs_fs_forget(fs_of(req), ino, nlookup); /* before the reply, which frees req */
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        pfs_fs_forget(fs_of(req), forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    PfsAttr a;
    (void)fi;
    int r = pfs_fs_getattr(fs_of(req), ino, &a);
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    fuse_reply_attr(req, &a.st, a.attr_timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    _cleanup_free_ char *target = NULL;
    int r = pfs_fs_readlink(fs_of(req), ino, &target);
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    fuse_reply_readlink(req, target);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    PfsFs *fs = fs_of(req);
    PfsFile *f;
    int r = pfs_file_open(fs, ino, fi->flags, &f);
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    fi->fh = (uintptr_t)f;
    fi->keep_cache = 1; /* snapshots are immutable: pages cached by an earlier open stay valid */
    /* /stats changes all the time and says its size is 0: only direct I/O reads it whole. */
    fi->direct_io = fs->params.direct_io || f->node->kind == PFS_NODE_STATS;
    fi->noflush = 1;
    if (fuse_reply_open(req, fi) != 0)
        pfs_file_release(fs, f); /* interrupted: no release will come */
}

/* writev() takes at most IOV_MAX (1024) pieces: a 1 MiB read of a repository made with tiny
 * chunks (page size 512) could need more, and then goes out as one copied buffer. */
#define MAX_REPLY_IOV 512

static void reply_copied(fuse_req_t req, const PfsReadReply *rr)
{
    _cleanup_free_ char *buf = malloc(rr->bytes);
    if (!buf)
        return (void)fuse_reply_err(req, ENOMEM);
    size_t at = 0;
    for (size_t i = 0; i < rr->n; i++) {
        memcpy(buf + at, rr->iov[i].iov_base, rr->iov[i].iov_len);
        at += rr->iov[i].iov_len;
    }
    fuse_reply_buf(req, buf, at);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    PfsFs *fs = fs_of(req);
    PfsReadReply rr;
    (void)ino;
    if (off < 0)
        return (void)fuse_reply_err(req, EINVAL);
    long n = pfs_file_read(fs, (PfsFile *)(uintptr_t)fi->fh, size, (uint64_t)off, &rr);
    if (n < 0)
        return (void)fuse_reply_err(req, (int)-n);
    if (rr.n == 0)
        fuse_reply_buf(req, NULL, 0);
    else if (rr.n <= MAX_REPLY_IOV)
        fuse_reply_iov(req, rr.iov, (int)rr.n); /* straight from the pinned cache entries */
    else
        reply_copied(req, &rr);
    pfs_read_reply_done(fs, &rr);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    (void)ino;
    if (off < 0)
        return (void)fuse_reply_err(req, ENXIO);
    int64_t r = pfs_file_lseek(fs_of(req), (PfsFile *)(uintptr_t)fi->fh, (uint64_t)off, whence);
    if (r < 0)
        return (void)fuse_reply_err(req, (int)-r);
    fuse_reply_lseek(req, (off_t)r);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    _cleanup_free_ char *buf = size ? malloc(size) : NULL;
    if (size && !buf)
        return (void)fuse_reply_err(req, ENOMEM);
    long n = pfs_fs_getxattr(fs_of(req), ino, name, buf, size);
    if (n < 0)
        return (void)fuse_reply_err(req, (int)-n);
    if (size == 0)
        return (void)fuse_reply_xattr(req, (size_t)n);
    fuse_reply_buf(req, buf, (size_t)n);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    _cleanup_free_ char *buf = size ? malloc(size) : NULL;
    if (size && !buf)
        return (void)fuse_reply_err(req, ENOMEM);
    long n = pfs_fs_listxattr(fs_of(req), ino, buf, size);
    if (n < 0)
        return (void)fuse_reply_err(req, (int)-n);
    if (size == 0)
        return (void)fuse_reply_xattr(req, (size_t)n);
    fuse_reply_buf(req, buf, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    pfs_file_release(fs_of(req), (PfsFile *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    PfsFs *fs = fs_of(req);
    PfsDirHandle *dh;
    int r = pfs_dir_open(fs, ino, &dh);
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    fi->fh = (uintptr_t)dh;
    if (dh->node->kind == PFS_NODE_ENTRY && !dh->list) { /* not below /wal */
        fi->cache_readdir = 1; /* a snapshot directory never changes */
        fi->keep_cache = 1;
    }
    if (fuse_reply_open(req, fi) != 0)
        pfs_dir_release(fs, dh);
}

typedef struct FillCtx {
    fuse_req_t req;
    char *buf;
    size_t size, pos;
    bool plus;
} FillCtx;

static int fill_entry(void *ctx, const PfsDirent *d)
{
    FillCtx *c = ctx;
    size_t need;
    if (c->plus) {
        struct fuse_entry_param e = { 0 };
        if (d->attr)
            e = entry_param(d->attr);
        else {
            e.attr.st_ino = d->ino; /* . and ..: ino 0, the kernel does not link them */
            e.attr.st_mode = d->type;
        }
        need = fuse_add_direntry_plus(c->req, c->buf + c->pos, c->size - c->pos, d->name, &e,
                                      d->next);
    } else {
        struct stat st = { .st_ino = d->ino, .st_mode = d->type };
        need = fuse_add_direntry(c->req, c->buf + c->pos, c->size - c->pos, d->name, &st, d->next);
    }
    if (need > c->size - c->pos)
        return 1;
    c->pos += need;
    return 0;
}

static void readdir_common(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
                           bool plus)
{
    _cleanup_free_ char *buf = malloc(size);
    if (!buf)
        return (void)fuse_reply_err(req, ENOMEM);
    FillCtx c = { .req = req, .buf = buf, .size = size, .plus = plus };
    int r = pfs_dir_read(fs_of(req), (PfsDirHandle *)(uintptr_t)fi->fh, off, plus, fill_entry, &c);
    if (r < 0 && c.pos == 0)
        return (void)fuse_reply_err(req, -r);
    fuse_reply_buf(req, buf, c.pos); /* entries already counted must go out, error or not */
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)ino;
    readdir_common(req, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    (void)ino;
    readdir_common(req, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    pfs_dir_release(fs_of(req), (PfsDirHandle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs st;
    (void)ino;
    int r = pfs_fs_statfs(fs_of(req), &st);
    if (r < 0)
        return (void)fuse_reply_err(req, -r);
    fuse_reply_statfs(req, &st);
}

/* ---- everything that would write: EROFS ---- */

static void rofs(fuse_req_t req)
{
    fuse_reply_err(req, EROFS);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)ino, (void)attr, (void)to_set, (void)fi;
    rofs(req);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)parent, (void)name, (void)mode, (void)rdev;
    rofs(req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    (void)parent, (void)name, (void)mode;
    rofs(req);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent, (void)name;
    rofs(req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link, (void)parent, (void)name;
    rofs(req);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    (void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
    rofs(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)ino, (void)newparent, (void)newname;
    rofs(req);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino, (void)buf, (void)size, (void)off, (void)fi;
    rofs(req);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    (void)parent, (void)name, (void)mode, (void)fi;
    rofs(req);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    (void)ino, (void)name, (void)value, (void)size, (void)flags;
    rofs(req);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino, (void)name;
    rofs(req);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    (void)ino, (void)mode, (void)offset, (void)length, (void)fi;
    rofs(req);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags)
{
    (void)ino_in, (void)off_in, (void)fi_in, (void)ino_out, (void)off_out, (void)fi_out;
    (void)len, (void)flags;
    rofs(req); /* only ever called with the destination on this filesystem */
}

const struct fuse_lowlevel_ops pfs_ll_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .lseek = op_lseek,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .write = op_write,
    .create = op_create,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
    .copy_file_range = op_copy_file_range,
};
