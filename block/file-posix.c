/*
 * The "file" protocol driver: a regular file or block device.
 *
 * I/O goes through io_uring by default (aio=io_uring; aio=native, which
 * as in QEMU requires cache.direct=on, is accepted as a synonym because
 * blockd has no Linux AIO engine), or
 * through the thread pool with aio=threads or where io_uring cannot be
 * set up.  With cache.direct=on the file is opened O_DIRECT and the node
 * advertises the device's direct-I/O alignment (from statx, else probed
 * by trial reads), so the core does read-modify-write for smaller
 * requests.
 *
 * A request's I/O vector goes to the kernel as it is: one element as a
 * plain read or write, more as preadv/pwritev (IORING_OP_READV/WRITEV
 * with io_uring).  After a short transfer the rest of the vector, as a
 * slice, is submitted again.  Reads beyond the end of the file (possible
 * when its size is not a multiple of the alignment) return zeroes.
 * Write-zeroes uses fallocate: PUNCH_HOLE where unmapping is allowed,
 * else ZERO_RANGE.  Block status comes from SEEK_DATA/SEEK_HOLE.
 *
 * With locking=on|auto (the default) the node advertises the permissions
 * its parents take with QEMU-compatible byte locks (file-lock.h), so
 * blockd, QEMU and qemu-img refuse to write an image another of them is
 * using.  The locks are held on a second open file description that no
 * I/O ever uses, so that they go away with the process (file-lock.c).
 */
#include "block/block_int.h"
#include "block/file-lock.h"
#include "util/aio.h"
#include "qapi/qapi-types.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

enum {
    FILE_MAX_TRANSFER = 1 << 30,
};

typedef struct BDRVFileState {
    int fd;
    bool use_uring;
    bool has_fallocate_zero;    /* cleared on the first EOPNOTSUPP */
    bool has_punch_hole;
    bool use_locking;
    FileLock lock;              /* if use_locking */
    int open_flags;             /* but the access mode */
    int reopen_fd;              /* prepared by a reopen, or -1 */
} BDRVFileState;

static ssize_t coroutine_fn file_co_submit(BlockDriverState *bs,
                                           AioRequest *req)
{
    BDRVFileState *s = bs->opaque;

    req->fd = s->fd;
    return s->use_uring ? uring_co_submit(req)
                        : thread_pool_co_submit_request(req);
}

/* The alignment O_DIRECT needs: statx where the kernel says, else probe. */
static void file_probe_alignment(BlockDriverState *bs, int fd)
{
    static const uint32_t candidates[] = { 512, 1024, 2048, 4096 };
    struct statx stx;
    void *buf;

    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        bs->bl.request_alignment = stx.stx_dio_offset_align;
        bs->bl.min_mem_alignment = MAX(stx.stx_dio_mem_align, 1);
        return;
    }
    buf = blk_memalign(4096);
    bs->bl.request_alignment = 4096;
    bs->bl.min_mem_alignment = 4096;
    for (unsigned i = 0; buf && i < G_N_ELEMENTS(candidates); i++) {
        if (pread(fd, buf, candidates[i], 0) >= 0) {
            bs->bl.request_alignment = candidates[i];
            break;
        }
    }
    blk_vfree(buf);
}

static int coroutine_fn file_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    BDRVFileState *s = bs->opaque;
    BlockdevOptionsFile *opts = &options->u.file;
    int flags = O_CLOEXEC | (bs->cache_direct ? O_DIRECT : 0);
    struct stat st;

    /* QEMU's rule: native AIO is only asynchronous with O_DIRECT */
    if (opts->has_aio && opts->aio == BLOCKDEV_AIO_OPTIONS_NATIVE &&
        !bs->cache_direct) {
        error_setg(errp, "aio=native was specified, but it requires "
                   "cache.direct=on, which was not specified.");
        return -EINVAL;
    }
    s->open_flags = flags;
    s->reopen_fd = -1;
    s->fd = open(opts->filename, flags | (bs->read_only ? O_RDONLY : O_RDWR));
    if (s->fd < 0 && !bs->read_only && options->has_auto_read_only &&
        options->auto_read_only && (errno == EACCES || errno == EROFS)) {
        bs->read_only = true;
        s->fd = open(opts->filename, flags | O_RDONLY);
    }
    if (s->fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", opts->filename);
        return -errno;
    }
    if (fstat(s->fd, &st) < 0) {
        int ret = -errno;

        error_setg_errno(errp, errno, "Could not stat '%s'", opts->filename);
        close(s->fd);
        return ret;
    }
    if (S_ISBLK(st.st_mode)) {
        bs->total_bytes = lseek(s->fd, 0, SEEK_END);
    } else {
        bs->total_bytes = st.st_size;
    }

    s->use_uring = !(options->u.file.has_aio &&
                     options->u.file.aio == BLOCKDEV_AIO_OPTIONS_THREADS);
    if (s->use_uring && !uring_available(NULL)) {
        s->use_uring = false;
    }
    s->use_locking = !(opts->has_locking && opts->locking == ON_OFF_AUTO_OFF);
    if (s->use_locking &&
        !file_lock_open(&s->lock, s->fd, opts->filename, errp)) {
        close(s->fd);
        return -EIO;
    }
    s->has_fallocate_zero = true;
    s->has_punch_hole = true;
    if (bs->cache_direct) {
        file_probe_alignment(bs, s->fd);
    }
    bs->bl.max_transfer = FILE_MAX_TRANSFER;
    bs->filename = g_strdup(opts->filename);
    return 0;
}

/*
 * blockdev-reopen switching read-only: a new fd with the other access
 * mode, swapped in at commit (the node is drained then, so no request
 * uses the old one).  The image locks live on their own fd and stay.
 */
static bool file_reopen_prepare(BlockDriverState *bs, bool read_only,
                                Error **errp)
{
    BDRVFileState *s = bs->opaque;
    int fd = open(bs->filename, s->open_flags |
                                (read_only ? O_RDONLY : O_RDWR));

    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not reopen file");
        return false;
    }
    if (s->reopen_fd >= 0) {
        close(s->reopen_fd);
    }
    s->reopen_fd = fd;
    return true;
}

static void file_reopen_commit(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->reopen_fd >= 0) {
        close(s->fd);
        s->fd = s->reopen_fd;
        s->reopen_fd = -1;
    }
}

static void file_reopen_abort(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->reopen_fd >= 0) {
        close(s->reopen_fd);
        s->reopen_fd = -1;
    }
}

static void file_close(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->use_locking) {
        file_lock_close(&s->lock);
    }
    close(s->fd);
}

/*
 * Submit one system call for the start of @qiov at @offset: a plain read
 * or write for one element (cheaper for io_uring than a vector of one),
 * else preadv/pwritev of up to IOV_MAX elements.
 */
static ssize_t coroutine_fn file_co_submit_vector(BlockDriverState *bs,
                                                  bool is_write,
                                                  int64_t offset,
                                                  IOVector *qiov)
{
    AioRequest req = { .offset = offset };

    if (qiov->niov == 1) {
        req.op = is_write ? AIO_OP_WRITE : AIO_OP_READ;
        req.buf = qiov->iov[0].iov_base;
        req.len = qiov->iov[0].iov_len;
    } else {
        req.op = is_write ? AIO_OP_PWRITEV : AIO_OP_PREADV;
        req.iov = qiov->iov;
        req.iovcnt = MIN(qiov->niov, IOV_MAX);
    }
    return file_co_submit(bs, &req);
}

/*
 * Transfer all of @qiov at @offset, resubmitting what is left (a slice
 * of @qiov) after a short transfer.  A read that hits the end of the
 * file zero-fills the rest.
 */
static int coroutine_fn file_co_rwv(BlockDriverState *bs, bool is_write,
                                    int64_t offset, IOVector *qiov)
{
    size_t done = 0;
    IOVector rest;
    int ret = 0;

    iovector_init(&rest);
    while (ret == 0 && done < qiov->size) {
        IOVector *todo = done ? &rest : qiov;
        ssize_t n = file_co_submit_vector(bs, is_write, offset + done, todo);

        if (n == -EINTR || n == -EAGAIN) {
            continue;
        }
        if (n < 0) {
            ret = n;
        } else if (n == 0 && is_write) {
            ret = -EIO;
        } else if (n == 0) {
            iovector_memset(todo, 0, 0, todo->size);
            break;
        } else if ((done += n) < qiov->size) {
            iovector_destroy(&rest);
            iovector_init_slice(&rest, qiov, done, qiov->size - done);
        }
    }
    iovector_destroy(&rest);
    return ret;
}

static int coroutine_fn file_co_preadv(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    return file_co_rwv(bs, false, offset, qiov);
}

static int coroutine_fn file_co_pwritev(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov,
                                        BdrvRequestFlags flags)
{
    return file_co_rwv(bs, true, offset, qiov);
}

static int coroutine_fn file_co_fallocate(BlockDriverState *bs, int mode,
                                          int64_t offset, int64_t bytes)
{
    AioRequest req = {
        .op = AIO_OP_FALLOCATE, .mode = mode, .offset = offset, .len = bytes,
    };
    int ret = file_co_submit(bs, &req);

    return ret == -EOPNOTSUPP ? -ENOTSUP : ret;
}

static int coroutine_fn file_co_pwrite_zeroes(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    int ret = -ENOTSUP;

    if ((flags & BDRV_REQ_MAY_UNMAP) && s->has_punch_hole) {
        ret = file_co_fallocate(bs, FALLOC_FL_PUNCH_HOLE |
                                FALLOC_FL_KEEP_SIZE, offset, bytes);
        if (ret != -ENOTSUP) {
            return ret;
        }
        s->has_punch_hole = false;
    }
    if (s->has_fallocate_zero) {
        ret = file_co_fallocate(bs, FALLOC_FL_ZERO_RANGE, offset, bytes);
        if (ret == -ENOTSUP) {
            s->has_fallocate_zero = false;
        }
    }
    return ret;
}

static int coroutine_fn file_co_pdiscard(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes)
{
    return file_co_fallocate(bs, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             offset, bytes);
}

/*
 * Copy offload: copy_file_range() between two file nodes.  The kernel
 * copies inside the page cache or the device, or shares the blocks
 * (reflink on XFS and Btrfs): the data never reaches the daemon.
 */
static int coroutine_fn file_co_copy_range_from(BlockDriverState *bs,
                                                BdrvChild *src,
                                                int64_t src_offset,
                                                BdrvChild *dst,
                                                int64_t dst_offset,
                                                int64_t bytes,
                                                BdrvRequestFlags flags)
{
    return bdrv_co_copy_range_to(src, src_offset, dst, dst_offset, bytes,
                                 flags);
}

typedef struct FileCopyRange {
    int src_fd, dst_fd;
    loff_t src_offset, dst_offset;
    int64_t bytes;
} FileCopyRange;

/* In a pool thread (copy_file_range() blocks): all of it, or -errno. */
static int file_copy_range_run(void *opaque)
{
    FileCopyRange *c = opaque;

    while (c->bytes > 0) {
        ssize_t n = copy_file_range(c->src_fd, &c->src_offset, c->dst_fd,
                                    &c->dst_offset,
                                    MIN(c->bytes, (int64_t)SSIZE_MAX), 0);

        if (n < 0 && errno != EINTR) {
            return -errno;
        }
        if (n == 0) {
            return -EIO;        /* the source file ended early */
        }
        c->bytes -= MAX(n, 0);
    }
    return 0;
}

static int coroutine_fn file_co_copy_range_to(BlockDriverState *bs,
                                              BdrvChild *src,
                                              int64_t src_offset,
                                              BdrvChild *dst,
                                              int64_t dst_offset,
                                              int64_t bytes,
                                              BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    FileCopyRange c;
    int ret;

    if (src->bs->drv != bs->drv) {
        return -ENOTSUP;        /* the source is not a file node */
    }
    c = (FileCopyRange) {
        .src_fd = ((BDRVFileState *)src->bs->opaque)->fd,
        .dst_fd = s->fd,
        .src_offset = src_offset,
        .dst_offset = dst_offset,
        .bytes = bytes,
    };
    ret = thread_pool_co_submit(file_copy_range_run, &c);
    /*
     * Files the kernel cannot copy between (another file system on an
     * older kernel, a special file, no such system call): no offload.
     */
    if (ret == -EXDEV || ret == -EINVAL || ret == -ENOSYS ||
        ret == -EOPNOTSUPP) {
        return -ENOTSUP;
    }
    return ret;
}

static int coroutine_fn file_co_flush(BlockDriverState *bs)
{
    AioRequest req = { .op = AIO_OP_FDATASYNC };

    return file_co_submit(bs, &req);
}

/*
 * SEEK_DATA/SEEK_HOLE are quick metadata lookups, done inline.  Where the
 * file system does not support them, everything is data.
 */
static int coroutine_fn file_co_block_status(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    BDRVFileState *s = bs->opaque;
    off_t data = lseek(s->fd, offset, SEEK_DATA);
    off_t hole;

    (void)map;
    (void)file;
    if (data < 0 && errno == ENXIO) {
        /* Only a hole up to the end of the file. */
        *pnum = bytes;
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    }
    if (data < 0) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    if (data > offset) {
        *pnum = MIN(bytes, data - offset);
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    }
    hole = lseek(s->fd, offset, SEEK_HOLE);
    *pnum = hole > offset ? MIN(bytes, hole - offset) : bytes;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

static int64_t file_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return (int64_t)st.st_blocks * 512;
}

static bool file_check_perm(BlockDriverState *bs, uint64_t perm,
                            uint64_t shared, Error **errp)
{
    BDRVFileState *s = bs->opaque;

    return !s->use_locking ||
           file_lock_prepare(&s->lock, bs->filename, perm, shared, errp);
}

static void file_set_perm(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared)
{
    BDRVFileState *s = bs->opaque;

    if (s->use_locking) {
        file_lock_commit(&s->lock, perm, shared);
    }
}

static void file_abort_perm(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->use_locking) {
        file_lock_abort(&s->lock);
    }
}

/*
 * blockdev-create for files, with QEMU's observable behaviour: the file
 * is created or truncated to zero, locked for writing (failing if another
 * process uses it), given its size with the requested preallocation, and
 * for preallocation=off|falloc its first block is written so that the
 * file system allocates it (later probing of the alignment then reads
 * real data).  Data-sized work (fallocate, zero writes, fsync) goes
 * through the I/O engine, so the main loop keeps running.
 */
enum {
    FILE_CREATE_EXTENT_HINT = 1 << 20,  /* QEMU's default: 1 MiB */
    FILE_CREATE_ZERO_CHUNK = 1 << 20,
};

static int coroutine_fn file_create_write_zeroes(int fd, int64_t offset,
                                                 int64_t bytes)
{
    g_autofree char *buf = g_malloc0(MIN(bytes, FILE_CREATE_ZERO_CHUNK));

    while (bytes > 0) {
        AioRequest req = {
            .op = AIO_OP_WRITE, .fd = fd, .buf = buf, .offset = offset,
            .len = MIN(bytes, FILE_CREATE_ZERO_CHUNK),
        };
        ssize_t n = aio_co_submit(&req);

        if (n == -EINTR || n == -EAGAIN) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? n : -EIO;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static void file_create_set_hints(int fd, BlockdevCreateOptionsFile *opts)
{
    uint64_t hint = opts->has_extent_size_hint ? opts->extent_size_hint
                                               : FILE_CREATE_EXTENT_HINT;
    struct fsxattr attr;
    int flags;

    if (opts->has_nocow && opts->nocow &&
        ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
        /* Only btrfs knows the flag; elsewhere this fails harmlessly. */
        flags |= FS_NOCOW_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    if (hint == 0) {
        return;
    }
    if (ioctl(fd, FS_IOC_FSGETXATTR, &attr) < 0 ||
        (attr.fsx_xflags |= FS_XFLAG_EXTSIZE, attr.fsx_extsize = hint,
         ioctl(fd, FS_IOC_FSSETXATTR, &attr) < 0)) {
        if (opts->has_extent_size_hint) {
            warn_report("Failed to set extent size hint: %s",
                        g_strerror(errno));
        }
    }
}

/* Give the (empty) file its size, preallocated as @prealloc asks. */
static int coroutine_fn file_create_resize(int fd, int64_t size,
                                           PreallocMode prealloc,
                                           Error **errp)
{
    AioRequest req = {
        .op = AIO_OP_FALLOCATE, .fd = fd, .mode = 0, .offset = 0,
        .len = size,
    };
    int ret;

    switch (prealloc) {
    case PREALLOC_MODE_OFF:
    case PREALLOC_MODE_FULL:
        if (ftruncate(fd, size) < 0) {
            ret = -errno;
            error_setg_errno(errp, -ret, "Could not resize file");
            return ret;
        }
        if (prealloc == PREALLOC_MODE_OFF) {
            return 0;
        }
        ret = file_create_write_zeroes(fd, 0, size);
        if (ret < 0) {
            error_setg_errno(errp, -ret,
                             "Could not write zeros for preallocation");
            return ret;
        }
        req = (AioRequest) { .op = AIO_OP_FSYNC, .fd = fd };
        ret = aio_co_submit(&req);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not flush file to disk");
            return ret;
        }
        return 0;
    case PREALLOC_MODE_FALLOC:
        if (size == 0) {
            return 0;
        }
        ret = aio_co_submit(&req);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not preallocate new data");
            return ret;
        }
        return 0;
    default:
        error_setg(errp, "Unsupported preallocation mode: %s",
                   PreallocMode_str(prealloc));
        return -ENOTSUP;
    }
}

static int coroutine_fn file_co_create(BlockdevCreateOptions *options,
                                       Error **errp)
{
    BlockdevCreateOptionsFile *opts = &options->u.file;
    PreallocMode prealloc = opts->has_preallocation ? opts->preallocation
                                                    : PREALLOC_MODE_OFF;
    uint64_t perm = BLK_PERM_WRITE | BLK_PERM_RESIZE;
    uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    FileLock lock;
    int fd;
    int ret;

    g_assert(options->driver == BLOCKDEV_DRIVER_FILE);
    if (opts->has_extent_size_hint && opts->extent_size_hint > UINT32_MAX) {
        error_setg(errp, "Extent size hint is too large");
        return -EINVAL;
    }
    fd = open(opts->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Could not create '%s'",
                         opts->filename);
        return ret;
    }
    if (!file_lock_open(&lock, fd, opts->filename, errp)) {
        close(fd);
        return -EIO;
    }
    if (!file_lock_prepare(&lock, opts->filename, perm, shared, errp)) {
        ret = -EBUSY;
        goto out;
    }
    file_create_set_hints(fd, opts);
    if (ftruncate(fd, 0) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Could not resize file");
        goto out;
    }
    ret = file_create_resize(fd, opts->size, prealloc, errp);
    if (ret == 0 && opts->size > 0 && prealloc != PREALLOC_MODE_FULL) {
        /* Best effort, like QEMU: a sector for tiny images, else 4 KiB. */
        file_create_write_zeroes(fd, 0, opts->size < 4096 ? 512 : 4096);
    }

out:
    file_lock_close(&lock);
    if (close(fd) < 0 && ret == 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Could not close the new file");
    }
    return ret;
}

/* A plain file has no clusters and no dirty bit, but QEMU says so. */
static int file_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return 0;
}

static const BlockDriver bdrv_file = {
    .format_name = "file",
    .instance_size = sizeof(BDRVFileState),
    .has_variable_length = true,
    .can_reopen_read_only = true,
    .bdrv_reopen_prepare = file_reopen_prepare,
    .bdrv_reopen_commit = file_reopen_commit,
    .bdrv_reopen_abort = file_reopen_abort,
    .bdrv_open = file_open,
    .bdrv_close = file_close,
    .bdrv_co_create = file_co_create,
    .bdrv_co_preadv = file_co_preadv,
    .bdrv_co_pwritev = file_co_pwritev,
    .bdrv_co_pwrite_zeroes = file_co_pwrite_zeroes,
    .bdrv_co_pdiscard = file_co_pdiscard,
    .bdrv_co_copy_range_from = file_co_copy_range_from,
    .bdrv_co_copy_range_to = file_co_copy_range_to,
    .bdrv_co_flush = file_co_flush,
    .bdrv_co_block_status = file_co_block_status,
    .bdrv_get_allocated_file_size = file_get_allocated_file_size,
    .bdrv_get_info = file_get_info,
    .bdrv_check_perm = file_check_perm,
    .bdrv_set_perm = file_set_perm,
    .bdrv_abort_perm = file_abort_perm,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};

static void __attribute__((constructor)) file_register(void)
{
    bdrv_register(&bdrv_file);
}
