/*
 * The "file" protocol driver: a regular file or block device.
 *
 * I/O goes through io_uring by default (aio=io_uring; aio=native is
 * accepted as a synonym because blockd has no Linux AIO engine), or
 * through the thread pool with aio=threads or where io_uring cannot be
 * set up.  With cache.direct=on the file is opened O_DIRECT and the node
 * advertises the device's direct-I/O alignment (from statx, else probed
 * by trial reads), so the core does read-modify-write for smaller
 * requests.
 *
 * Reads beyond the end of the file (possible when its size is not a
 * multiple of the alignment) return zeroes.  Write-zeroes uses
 * fallocate: PUNCH_HOLE where unmapping is allowed, else ZERO_RANGE.
 * Block status comes from SEEK_DATA/SEEK_HOLE.
 *
 * With locking=on|auto (the default) the node advertises the permissions
 * its parents take with QEMU-compatible byte locks (file-lock.h), so
 * blockd, QEMU and qemu-img refuse to write an image another of them is
 * using.
 */
#include "block/block_int.h"
#include "block/file-lock.h"
#include "util/aio.h"
#include "qapi/qapi-types.h"

#include <fcntl.h>
#include <linux/falloc.h>
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
    s->has_fallocate_zero = true;
    s->has_punch_hole = true;
    if (bs->cache_direct) {
        file_probe_alignment(bs, s->fd);
    }
    bs->bl.max_transfer = FILE_MAX_TRANSFER;
    bs->filename = g_strdup(opts->filename);
    return 0;
}

static void file_close(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    close(s->fd);
}

/*
 * Transfer all of [@offset, @offset + @bytes), resubmitting after short
 * transfers.  A read that hits the end of the file zero-fills the rest.
 */
static int coroutine_fn file_co_rw(BlockDriverState *bs, AioOp op,
                                   int64_t offset, int64_t bytes, char *buf)
{
    while (bytes > 0) {
        AioRequest req = {
            .op = op, .buf = buf, .len = bytes, .offset = offset,
        };
        ssize_t n = file_co_submit(bs, &req);

        if (n == -EINTR || n == -EAGAIN) {
            continue;
        }
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            if (op == AIO_OP_WRITE) {
                return -EIO;
            }
            memset(buf, 0, bytes);
            break;
        }
        buf += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int coroutine_fn file_co_pread(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, void *buf,
                                      BdrvRequestFlags flags)
{
    return file_co_rw(bs, AIO_OP_READ, offset, bytes, buf);
}

static int coroutine_fn file_co_pwrite(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, const void *buf,
                                       BdrvRequestFlags flags)
{
    /* The buffer is only read; AioRequest has one pointer for both. */
    return file_co_rw(bs, AIO_OP_WRITE, offset, bytes, (char *)buf);
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
           file_lock_check(s->fd, bs->filename, perm, shared, errp);
}

static void file_set_perm(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared)
{
    BDRVFileState *s = bs->opaque;

    if (s->use_locking) {
        file_lock_apply(s->fd, perm, shared);
    }
}

static const BlockDriver bdrv_file = {
    .format_name = "file",
    .instance_size = sizeof(BDRVFileState),
    .bdrv_open = file_open,
    .bdrv_close = file_close,
    .bdrv_co_pread = file_co_pread,
    .bdrv_co_pwrite = file_co_pwrite,
    .bdrv_co_pwrite_zeroes = file_co_pwrite_zeroes,
    .bdrv_co_pdiscard = file_co_pdiscard,
    .bdrv_co_flush = file_co_flush,
    .bdrv_co_block_status = file_co_block_status,
    .bdrv_get_allocated_file_size = file_get_allocated_file_size,
    .bdrv_check_perm = file_check_perm,
    .bdrv_set_perm = file_set_perm,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};

static void __attribute__((constructor)) file_register(void)
{
    bdrv_register(&bdrv_file);
}
