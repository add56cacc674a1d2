/*
 * The I/O entry points of the block layer.
 *
 * Every request from a parent passes through here before it reaches a
 * driver, and here the driver contract (see block_int.h) is enforced:
 *
 *  - the range is checked against the node's length;
 *  - requests not aligned to bs->bl.request_alignment are widened to it.
 *    Reads go through a bounce buffer.  Writes become read-modify-write
 *    of the partial head and tail blocks, and such a request is
 *    "serialising": it waits for every earlier overlapping write and every
 *    later overlapping write waits for it, so two RMW cycles on one block
 *    cannot lose each other's bytes;
 *  - buffers not aligned to bs->bl.min_mem_alignment are bounced;
 *  - requests are split at bs->bl.max_transfer;
 *  - flags the driver cannot handle are emulated: FUA by a flush after
 *    the write, write-zeroes by writing a zeroed buffer (unless the caller
 *    asked for BDRV_REQ_NO_FALLBACK).
 *
 * Waiting is cheap when nothing is unaligned: a request scans the list of
 * requests in flight only while some serialising request exists.
 */
#include "block/block_int.h"
#include "block/block-backend.h"
#include "block/dirty-bitmap.h"
#include "util/main-loop.h"
#include "block/trace.h"

enum {
    ZERO_FALLBACK_CHUNK = 1 << 20,
};

void *blk_memalign(size_t size)
{
    void *ptr = NULL;

    if (posix_memalign(&ptr, 4096, MAX(size, 1)) != 0) {
        return NULL;
    }
    return ptr;
}

void blk_vfree(void *ptr)
{
    free(ptr);
}

static int bdrv_check_range_to(int64_t offset, int64_t bytes, int64_t end)
{
    if (offset < 0 || bytes < 0 || bytes > INT64_MAX - offset ||
        offset + bytes > end) {
        return -EIO;
    }
    return 0;
}

static int bdrv_check_range(BlockDriverState *bs, int64_t offset,
                            int64_t bytes)
{
    return bdrv_check_range_to(offset, bytes, bs->total_bytes);
}

/* --- request tracking --- */

static void bdrv_dec_in_flight(BlockDriverState *bs)
{
    if (--bs->in_flight == 0) {
        bdrv_wake_drainers();
    }
}

static void tracked_request_begin(BlockDriverState *bs,
                                  BdrvTrackedRequest *req, int64_t offset,
                                  int64_t bytes, bool is_write,
                                  bool serialising)
{
    *req = (BdrvTrackedRequest) {
        .offset = offset,
        .bytes = bytes,
        .is_write = is_write,
        .serialising = serialising,
        .link.data = req,
    };
    co_queue_init(&req->waiters);
    g_queue_push_tail_link(&bs->tracked_requests, &req->link);
    bs->in_flight++;
    if (serialising) {
        bs->serialising_in_flight++;
    }
}

static void tracked_request_end(BlockDriverState *bs,
                                BdrvTrackedRequest *req)
{
    g_queue_unlink(&bs->tracked_requests, &req->link);
    if (req->serialising) {
        bs->serialising_in_flight--;
    }
    co_queue_restart_all(&req->waiters);
    bdrv_dec_in_flight(bs);
}

static bool requests_conflict(const BdrvTrackedRequest *a,
                              const BdrvTrackedRequest *b)
{
    return (a->serialising || b->serialising) &&
           (a->is_write || b->is_write) &&
           a->offset < b->offset + b->bytes &&
           b->offset < a->offset + a->bytes;
}

/*
 * Wait until no earlier request conflicts with @req.  Only earlier ones
 * are considered, so waits always point backwards and cannot cycle.
 */
static void coroutine_fn wait_serialising_requests(BlockDriverState *bs,
                                                   BdrvTrackedRequest *req)
{
    bool waited;

    if (bs->serialising_in_flight == 0) {
        return;
    }
    do {
        waited = false;
        for (GList *l = bs->tracked_requests.head; l != &req->link;
             l = l->next) {
            BdrvTrackedRequest *other = l->data;

            if (requests_conflict(req, other)) {
                co_queue_wait(&other->waiters);
                waited = true;
                break;
            }
        }
    } while (waited);
}

/* --- reads --- */

static int coroutine_fn bdrv_aligned_pread(BlockDriverState *bs,
                                           int64_t offset, int64_t bytes,
                                           void *buf, BdrvRequestFlags flags)
{
    uint32_t max = bs->bl.max_transfer ? bs->bl.max_transfer : INT_MAX;

    while (bytes > 0) {
        int64_t n = MIN(bytes, (int64_t)max);
        int ret = bs->drv->bdrv_co_pread(bs, offset, n, buf, flags);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        buf = (char *)buf + n;
    }
    return 0;
}

static bool buffer_aligned(BlockDriverState *bs, const void *buf)
{
    return IS_ALIGNED((uintptr_t)buf, bs->bl.min_mem_alignment);
}

int coroutine_fn bdrv_co_pread(BdrvChild *child, int64_t offset,
                               int64_t bytes, void *buf,
                               BdrvRequestFlags flags)
{
    BlockDriverState *bs = child->bs;
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ALIGN_DOWN(offset, align);
    int64_t end;
    BdrvTrackedRequest req;
    int ret = bdrv_check_range(bs, offset, bytes);

    trace_bdrv_co_pread(bs, offset, bytes, flags);
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    end = ALIGN_UP(offset + bytes, align);

    tracked_request_begin(bs, &req, start, end - start, false, false);
    if (start == offset && end == offset + bytes && buffer_aligned(bs, buf)) {
        ret = bdrv_aligned_pread(bs, offset, bytes, buf, flags);
    } else {
        void *bounce = blk_memalign(end - start);

        ret = bounce ? bdrv_aligned_pread(bs, start, end - start, bounce,
                                          flags)
                     : -ENOMEM;
        if (ret == 0) {
            memcpy(buf, (char *)bounce + (offset - start), bytes);
        }
        blk_vfree(bounce);
    }
    tracked_request_end(bs, &req);
    trace_bdrv_co_pread_done(bs, offset, bytes, ret);
    return ret;
}

/* --- writes --- */

static int coroutine_fn bdrv_aligned_pwrite(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            const void *buf,
                                            BdrvRequestFlags flags)
{
    uint32_t max = bs->bl.max_transfer ? bs->bl.max_transfer : INT_MAX;
    BdrvRequestFlags driver_flags = flags & bs->drv->supported_write_flags;

    while (bytes > 0) {
        int64_t n = MIN(bytes, (int64_t)max);
        int ret = bs->drv->bdrv_co_pwrite(bs, offset, n, buf, driver_flags);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        buf = (const char *)buf + n;
    }
    if ((flags & BDRV_REQ_FUA) && !(driver_flags & BDRV_REQ_FUA)) {
        return bdrv_co_flush(bs);
    }
    return 0;
}

/*
 * Write [@offset, @offset + @bytes) where the range or the buffer is not
 * aligned: fill an aligned bounce buffer with the old head and tail blocks
 * and the new data, then write it whole.  The caller holds a serialising
 * request over the aligned range.
 */
static int coroutine_fn bdrv_rmw_pwrite(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        const void *buf,
                                        BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ALIGN_DOWN(offset, align);
    int64_t end = ALIGN_UP(offset + bytes, align);
    char *bounce = blk_memalign(end - start);
    int ret = 0;

    if (!bounce) {
        return -ENOMEM;
    }
    if (start != offset) {
        ret = bdrv_aligned_pread(bs, start, align, bounce, 0);
    }
    if (ret == 0 && end != offset + bytes &&
        (end - align != start || start == offset)) {
        ret = bdrv_aligned_pread(bs, end - align, align,
                                 bounce + (end - align - start), 0);
    }
    if (ret == 0) {
        if (buf) {
            memcpy(bounce + (offset - start), buf, bytes);
        } else {
            memset(bounce + (offset - start), 0, bytes);
        }
        ret = bdrv_aligned_pwrite(bs, start, end - start, bounce, flags);
    }
    blk_vfree(bounce);
    return ret;
}

/* Whether @child may write past the end of its node, growing it. */
static bool bdrv_may_grow(BdrvChild *child)
{
    return child->bs->drv->has_variable_length &&
           (child->perm & BLK_PERM_RESIZE);
}

/* Only plain writes may grow a node; everything else stays within it. */
static int bdrv_check_write(BdrvChild *child, int64_t offset, int64_t bytes,
                            bool may_grow)
{
    if (!(child->perm & BLK_PERM_WRITE) || child->bs->read_only ||
        bdrv_has_readonly_bitmaps(child->bs)) {
        return -EPERM;
    }
    return bdrv_check_range_to(offset, bytes,
                               may_grow && bdrv_may_grow(child)
                               ? INT64_MAX : child->bs->total_bytes);
}

/* @buf == NULL writes zeroes (used for the unaligned edges of zeroing). */
static int coroutine_fn bdrv_do_pwrite(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, const void *buf,
                                       BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ALIGN_DOWN(offset, align);
    int64_t end = ALIGN_UP(offset + bytes, align);
    bool aligned = start == offset && end == offset + bytes;
    BdrvTrackedRequest req;
    int ret;

    tracked_request_begin(bs, &req, start, end - start, true, !aligned);
    wait_serialising_requests(bs, &req);
    bdrv_debug_event(bs, buf ? BLKDBG_PWRITEV : BLKDBG_PWRITEV_ZERO);
    if (!aligned || !buf) {
        ret = bdrv_rmw_pwrite(bs, offset, bytes, buf, flags);
    } else if (!buffer_aligned(bs, buf)) {
        void *bounce = blk_memalign(bytes);

        ret = -ENOMEM;
        if (bounce) {
            memcpy(bounce, buf, bytes);
            ret = bdrv_aligned_pwrite(bs, offset, bytes, bounce, flags);
            blk_vfree(bounce);
        }
    } else {
        ret = bdrv_aligned_pwrite(bs, offset, bytes, buf, flags);
    }
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    tracked_request_end(bs, &req);
    return ret;
}

static bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    /* Each byte equals the next and the first is zero: all are. */
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/*
 * detect-zeroes: a write of zeroes within the node becomes a write-zeroes
 * (one that may unmap, with detect-zeroes=unmap), as in QEMU.
 */
static bool bdrv_write_is_zeroes(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes, const void *buf)
{
    return bs->detect_zeroes != BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF &&
           offset + bytes <= bs->total_bytes && buffer_is_zero(buf, bytes);
}

int coroutine_fn bdrv_co_pwrite(BdrvChild *child, int64_t offset,
                                int64_t bytes, const void *buf,
                                BdrvRequestFlags flags)
{
    BlockDriverState *bs = child->bs;
    int ret = bdrv_check_write(child, offset, bytes, true);

    trace_bdrv_co_pwrite(bs, offset, bytes, flags);
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (bdrv_write_is_zeroes(bs, offset, bytes, buf)) {
        BdrvRequestFlags zero_flags = flags & BDRV_REQ_FUA;

        if (bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP) {
            zero_flags |= BDRV_REQ_MAY_UNMAP;
        }
        return bdrv_co_pwrite_zeroes(child, offset, bytes, zero_flags);
    }
    ret = bdrv_do_pwrite(bs, offset, bytes, buf, flags & BDRV_REQ_FUA);
    bdrv_set_dirty(bs, offset, bytes);
    if (ret == 0 && offset + bytes > bs->total_bytes) {
        bs->total_bytes = offset + bytes;
    }
    trace_bdrv_co_pwrite_done(bs, offset, bytes, ret);
    return ret;
}

/* --- write-zeroes --- */

static int coroutine_fn bdrv_zero_fallback(BlockDriverState *bs,
                                           int64_t offset, int64_t bytes,
                                           BdrvRequestFlags flags)
{
    int64_t chunk = MIN(bytes, ZERO_FALLBACK_CHUNK);
    void *zeroes = blk_memalign(chunk);
    int ret = zeroes ? 0 : -ENOMEM;

    if (zeroes) {
        memset(zeroes, 0, chunk);
    }
    while (ret == 0 && bytes > 0) {
        int64_t n = MIN(bytes, chunk);

        ret = bdrv_aligned_pwrite(bs, offset, n, zeroes, flags);
        offset += n;
        bytes -= n;
    }
    blk_vfree(zeroes);
    return ret;
}

static int coroutine_fn bdrv_aligned_pwrite_zeroes(BlockDriverState *bs,
                                                   int64_t offset,
                                                   int64_t bytes,
                                                   BdrvRequestFlags flags)
{
    BdrvRequestFlags driver_flags = flags & bs->drv->supported_zero_flags;
    BdrvTrackedRequest req;
    int ret = -ENOTSUP;

    tracked_request_begin(bs, &req, offset, bytes, true, false);
    wait_serialising_requests(bs, &req);
    bdrv_debug_event(bs, BLKDBG_PWRITEV_ZERO);
    if (bs->drv->bdrv_co_pwrite_zeroes) {
        ret = bs->drv->bdrv_co_pwrite_zeroes(bs, offset, bytes,
                                             driver_flags);
    }
    if (ret == -ENOTSUP && !(flags & BDRV_REQ_NO_FALLBACK)) {
        ret = bdrv_zero_fallback(bs, offset, bytes, flags & BDRV_REQ_FUA);
    } else if (ret == 0 && (flags & BDRV_REQ_FUA) &&
               !(driver_flags & BDRV_REQ_FUA)) {
        ret = bdrv_co_flush(bs);
    }
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    tracked_request_end(bs, &req);
    return ret;
}

int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset,
                                       int64_t bytes, BdrvRequestFlags flags)
{
    BlockDriverState *bs = child->bs;
    uint32_t align = bs->bl.request_alignment;
    int64_t end = offset + bytes;
    int64_t head_end, tail_start;
    int ret = bdrv_check_write(child, offset, bytes, false);

    trace_bdrv_co_pwrite_zeroes(bs, offset, bytes, flags);
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (!bs->discard_unmap) {
        flags &= ~BDRV_REQ_MAY_UNMAP;
    }
    head_end = MIN(ALIGN_UP(offset, align), end);
    tail_start = MAX(ALIGN_DOWN(end, align), head_end);
    if ((head_end != offset || tail_start != end) &&
        (flags & BDRV_REQ_NO_FALLBACK)) {
        /* Partial blocks can only be zeroed by writing them. */
        return -ENOTSUP;
    }
    if (head_end > offset) {
        ret = bdrv_do_pwrite(bs, offset, head_end - offset, NULL,
                             flags & BDRV_REQ_FUA);
    }
    if (ret == 0 && tail_start > head_end) {
        ret = bdrv_aligned_pwrite_zeroes(bs, head_end, tail_start - head_end,
                                         flags);
    }
    if (ret == 0 && end > tail_start) {
        ret = bdrv_do_pwrite(bs, tail_start, end - tail_start, NULL,
                             flags & BDRV_REQ_FUA);
    }
    bdrv_set_dirty(bs, offset, bytes);
    trace_bdrv_co_pwrite_zeroes_done(bs, offset, bytes, ret);
    return ret;
}

/* --- discard --- */

int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset,
                                  int64_t bytes)
{
    BlockDriverState *bs = child->bs;
    uint32_t align = bs->bl.request_alignment;
    int64_t start, end;
    BdrvTrackedRequest req;
    int ret = bdrv_check_write(child, offset, bytes, false);

    trace_bdrv_co_pdiscard(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    /* Discard is advisory: partial blocks at the edges are left alone. */
    start = ALIGN_UP(offset, align);
    end = ALIGN_DOWN(offset + bytes, align);
    if (!bs->discard_unmap || !bs->drv->bdrv_co_pdiscard || start >= end) {
        return 0;
    }
    tracked_request_begin(bs, &req, start, end - start, true, false);
    wait_serialising_requests(bs, &req);
    ret = bs->drv->bdrv_co_pdiscard(bs, start, end - start);
    bdrv_set_dirty(bs, start, end - start);
    tracked_request_end(bs, &req);
    return ret == -ENOTSUP ? 0 : ret;
}

/* --- flush --- */

int coroutine_fn bdrv_co_flush(BlockDriverState *bs)
{
    int ret = 0;

    trace_bdrv_co_flush(bs);
    if (bs->read_only) {
        return 0;
    }
    bs->in_flight++;
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_OS);
    if (bs->drv->bdrv_co_flush && !bs->cache_no_flush) {
        ret = bs->drv->bdrv_co_flush(bs);
    }
    if (ret == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    }
    for (GList *l = bs->children; l && ret == 0; l = l->next) {
        BdrvChild *child = l->data;

        if (child->perm & BLK_PERM_WRITE) {
            ret = bdrv_co_flush(child->bs);
        }
    }
    bdrv_dec_in_flight(bs);
    trace_bdrv_co_flush_done(bs, ret);
    return ret;
}

/* --- block status --- */

/*
 * The status of @bs's own layer, as its driver reports it (a driver that
 * maps a range onto its file is followed there).  BDRV_BLOCK_ALLOCATED
 * means this layer, not a backing node, decides what the range reads.
 */
static int coroutine_fn bdrv_co_block_status_layer(BlockDriverState *bs,
                                                   int64_t offset,
                                                   int64_t bytes,
                                                   int64_t *pnum)
{
    BlockDriverState *file = NULL;
    int64_t map = 0;
    int ret = bdrv_check_range(bs, offset, bytes);

    *pnum = 0;
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (!bs->drv->bdrv_co_block_status) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    bs->in_flight++;
    ret = bs->drv->bdrv_co_block_status(bs, offset, bytes, pnum, &map,
                                        &file);
    if (ret >= 0) {
        g_assert(*pnum > 0 && *pnum <= bytes);
    }
    if (ret >= 0 && (ret & BDRV_BLOCK_RAW)) {
        ret = bdrv_co_block_status_layer(file, map, *pnum, pnum);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs,
                                            BlockDriverState *base,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int *depth)
{
    BlockDriverState *layer = bs;
    int ret;

    for (*depth = 1;; ++*depth) {
        BlockDriverState *below;

        ret = bdrv_co_block_status_layer(layer, offset, bytes, pnum);
        if (ret < 0 || (ret & BDRV_BLOCK_ALLOCATED)) {
            return ret;
        }
        /* Not here: what the layer below says decides these bytes. */
        bytes = *pnum;
        below = layer->backing ? layer->backing->bs : NULL;
        if (!below || below == base) {
            *depth = 0;
            /* The end of the chain reads zeroes. */
            return below ? ret : BDRV_BLOCK_ZERO;
        }
        if (offset >= bdrv_getlength(below)) {
            /*
             * A short backing node: its zeroes past the end count as its
             * own, as in QEMU.
             */
            ++*depth;
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        }
        bytes = MIN(bytes, bdrv_getlength(below) - offset);
        layer = below;
    }
}

int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum,
                                      int *depth)
{
    int ret = bdrv_co_block_status_above(bs, NULL, offset, bytes, pnum,
                                         depth);

    if (ret >= 0 && *depth != 1) {
        ret &= ~BDRV_BLOCK_ALLOCATED;   /* allocated in a backing node */
    }
    return ret;
}

/* --- debug events --- */

void bdrv_debug_event(BlockDriverState *bs, BlkdebugEvent event)
{
    if (bs && bs->drv->bdrv_debug_event) {
        bs->drv->bdrv_debug_event(bs, event);
    }
}
