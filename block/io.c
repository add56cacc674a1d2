/*
 * The I/O entry points of the block layer.
 *
 * Every request from a parent passes through here before it reaches a
 * driver, and here the driver contract (see block_int.h) is enforced:
 *
 *  - the range is checked against the node's length;
 *  - requests not aligned to bs->bl.request_alignment are widened to it
 *    (BdrvPadding): the partial head and tail blocks are read into small
 *    bounce buffers, and the driver gets the vector [head block][the
 *    caller's vector between them][tail block], so the caller's bytes in
 *    the middle are not copied.  Writes are read-modify-write of those
 *    blocks, and such a request is "serialising": it waits for every
 *    earlier overlapping request and every later overlapping request
 *    waits for it, so two RMW cycles on one block cannot lose each
 *    other's bytes.  A caller may ask for the same with
 *    BDRV_REQ_SERIALISING (block-copy into a fleecing overlay, so that
 *    a reader of the overlay cannot read through to a source the guest
 *    is already changing);
 *  - a vector with an element that O_DIRECT cannot take (an address not
 *    aligned to bs->bl.min_mem_alignment, or a length not a multiple of
 *    the request alignment) is bounced whole;
 *  - requests are split at bs->bl.max_transfer, by slicing the vector;
 *  - flags the driver cannot handle are emulated: FUA by a flush after
 *    the write, write-zeroes by writing a zeroed buffer (unless the caller
 *    asked for BDRV_REQ_NO_FALLBACK).  BDRV_REQ_WRITE_COMPRESSED cannot
 *    be emulated: it reaches a driver that lists it, unchanged, and fails
 *    with -ENOTSUP elsewhere; such a request must already be aligned (it
 *    is never read-modify-write).
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

/* --- dispatch to the driver --- */

/*
 * Pass an aligned request to the driver, split at bs->bl.max_transfer.
 * Each piece goes down as a slice of @qiov, so nothing is copied.
 */
static int coroutine_fn bdrv_driver_rw(BlockDriverState *bs, bool is_write,
                                       int64_t offset, int64_t bytes,
                                       IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    int64_t max = bs->bl.max_transfer ? bs->bl.max_transfer : INT_MAX;
    int ret = 0;

    g_assert(qiov->size == (uint64_t)bytes);
    if (bytes <= max) {
        return is_write
               ? bs->drv->bdrv_co_pwritev(bs, offset, bytes, qiov, flags)
               : bs->drv->bdrv_co_preadv(bs, offset, bytes, qiov, flags);
    }
    for (int64_t done = 0; ret == 0 && done < bytes; done += max) {
        int64_t n = MIN(bytes - done, max);
        IOVector piece;

        iovector_init_slice(&piece, qiov, done, n);
        ret = is_write
              ? bs->drv->bdrv_co_pwritev(bs, offset + done, n, &piece, flags)
              : bs->drv->bdrv_co_preadv(bs, offset + done, n, &piece, flags);
        iovector_destroy(&piece);
    }
    return ret;
}

static int coroutine_fn bdrv_aligned_preadv(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            IOVector *qiov,
                                            BdrvRequestFlags flags)
{
    return bdrv_driver_rw(bs, false, offset, bytes, qiov, flags);
}

static int coroutine_fn bdrv_aligned_pwritev(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             IOVector *qiov,
                                             BdrvRequestFlags flags)
{
    BdrvRequestFlags driver_flags = flags & bs->drv->supported_write_flags;
    int ret = bdrv_driver_rw(bs, true, offset, bytes, qiov, driver_flags);

    if (ret == 0 && (flags & BDRV_REQ_FUA) &&
        !(driver_flags & BDRV_REQ_FUA)) {
        return bdrv_co_flush(bs);
    }
    return ret;
}

/* --- alignment --- */

/* Whether [@offset, +@bytes) is whole blocks of @bs. */
static bool bdrv_range_is_aligned(BlockDriverState *bs, int64_t offset,
                                  int64_t bytes)
{
    uint32_t align = bs->bl.request_alignment;

    return IS_ALIGNED(offset, align) && IS_ALIGNED(bytes, align);
}

/* Whether the driver can take [@offset, +@bytes) of @qiov as it is. */
static bool bdrv_is_aligned(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, const IOVector *qiov)
{
    return bdrv_range_is_aligned(bs, offset, bytes) &&
           iovector_is_aligned(qiov, bs->bl.min_mem_alignment,
                               bs->bl.request_alignment);
}

/*
 * A request widened to the node's alignment.  @vec covers the aligned
 * range [@start, @end); where the caller's bytes can go to the driver as
 * they are, @vec refers to the caller's vector, and the rest of @vec is
 * @bounce.  @copy lists the caller's bytes that live in @bounce: they are
 * copied out after a read, and in before a write.
 */
typedef struct BdrvPadding {
    int64_t offset, bytes;          /* the caller's request */
    int64_t start, end;
    uint8_t *bounce;
    IOVector vec;
    struct {
        size_t qiov_offset;         /* where in the caller's vector */
        size_t len;
        uint8_t *buf;               /* where in @bounce */
    } copy[2];
} BdrvPadding;

/*
 * Bounce everything: for a caller vector whose memory the driver cannot
 * take (or none: a write of zeroes).
 */
static bool bdrv_pad_whole(BdrvPadding *pad)
{
    pad->bounce = blk_memalign(pad->end - pad->start);
    if (!pad->bounce) {
        return false;
    }
    iovector_init_buf(&pad->vec, pad->bounce, pad->end - pad->start);
    pad->copy[0].qiov_offset = 0;
    pad->copy[0].len = pad->bytes;
    pad->copy[0].buf = pad->bounce + (pad->offset - pad->start);
    return true;
}

/*
 * Bounce only the partial head and tail blocks: @vec is [head block]
 * [the caller's bytes between them][tail block], if the driver can take
 * the middle part as it is.  A request within one block has no middle.
 * Both blocks share one allocation, the tail at the memory alignment.
 */
static bool bdrv_pad_edges(BlockDriverState *bs, BdrvPadding *pad,
                           IOVector *qiov)
{
    int64_t align = bs->bl.request_alignment;
    int64_t head_len = pad->offset != pad->start ? align : 0;
    int64_t tail_len = pad->offset + pad->bytes != pad->end &&
                       pad->end - pad->start > head_len ? align : 0;
    int64_t mid_start = pad->start + head_len;
    int64_t mid_end = pad->end - tail_len;
    int64_t tail_at = ALIGN_UP(head_len, (int64_t)bs->bl.min_mem_alignment);
    IOVector mid;

    /* Within one block, the (empty) middle is at the caller's end. */
    iovector_init_slice(&mid, qiov,
                        MIN(mid_start - pad->offset, pad->bytes),
                        mid_end - mid_start);
    if (!iovector_is_aligned(&mid, bs->bl.min_mem_alignment, align) ||
        !(pad->bounce = blk_memalign(tail_at + tail_len))) {
        iovector_destroy(&mid);
        return false;
    }
    iovector_add(&pad->vec, pad->bounce, head_len);
    iovector_add_slice(&pad->vec, &mid, 0, mid.size);
    iovector_add(&pad->vec, pad->bounce + tail_at, tail_len);
    iovector_destroy(&mid);
    if (head_len) {
        pad->copy[0].qiov_offset = 0;
        pad->copy[0].len = MIN(mid_start, pad->offset + pad->bytes) -
                           pad->offset;
        pad->copy[0].buf = pad->bounce + (pad->offset - pad->start);
    }
    if (tail_len) {
        pad->copy[1].qiov_offset = mid_end - pad->offset;
        pad->copy[1].len = pad->offset + pad->bytes - mid_end;
        pad->copy[1].buf = pad->bounce + tail_at;
    }
    return true;
}

/*
 * Set up @pad for [@offset, +@bytes) of @qiov (NULL: zeroes).
 * Returns 0 or -ENOMEM.
 */
static int bdrv_pad_init(BlockDriverState *bs, BdrvPadding *pad,
                         int64_t offset, int64_t bytes, IOVector *qiov)
{
    uint32_t align = bs->bl.request_alignment;

    *pad = (BdrvPadding) {
        .offset = offset,
        .bytes = bytes,
        .start = ALIGN_DOWN(offset, align),
        .end = ALIGN_UP(offset + bytes, align),
    };
    iovector_init(&pad->vec);
    if (qiov && bdrv_pad_edges(bs, pad, qiov)) {
        return 0;
    }
    return bdrv_pad_whole(pad) ? 0 : -ENOMEM;
}

static void bdrv_pad_destroy(BdrvPadding *pad)
{
    iovector_destroy(&pad->vec);
    blk_vfree(pad->bounce);
}

/* After a read of @pad->vec: hand the caller its bytes from @bounce. */
static void bdrv_pad_copy_out(BdrvPadding *pad, IOVector *qiov)
{
    for (size_t i = 0; i < G_N_ELEMENTS(pad->copy); i++) {
        if (pad->copy[i].len) {
            iovector_from_buf(qiov, pad->copy[i].qiov_offset,
                              pad->copy[i].buf, pad->copy[i].len);
        }
    }
}

/*
 * Before a write of @pad->vec: read the old contents of the partial head
 * and tail blocks, then put the caller's bytes (@qiov NULL: zeroes) into
 * @bounce over them.
 */
static int coroutine_fn bdrv_pad_fill(BlockDriverState *bs,
                                      BdrvPadding *pad, IOVector *qiov)
{
    int64_t align = bs->bl.request_alignment;
    int64_t len = pad->end - pad->start;
    bool partial_head = pad->offset != pad->start;
    bool partial_tail = pad->offset + pad->bytes != pad->end;
    int ret = 0;

    if (partial_head) {
        IOVector block;

        iovector_init_slice(&block, &pad->vec, 0, align);
        ret = bdrv_aligned_preadv(bs, pad->start, align, &block, 0);
        iovector_destroy(&block);
    }
    /* A single block is read only once. */
    if (ret == 0 && partial_tail && !(partial_head && len == align)) {
        IOVector block;

        iovector_init_slice(&block, &pad->vec, len - align, align);
        ret = bdrv_aligned_preadv(bs, pad->end - align, align, &block, 0);
        iovector_destroy(&block);
    }
    for (size_t i = 0; ret == 0 && i < G_N_ELEMENTS(pad->copy); i++) {
        if (!pad->copy[i].len) {
            continue;
        }
        if (qiov) {
            iovector_to_buf(qiov, pad->copy[i].qiov_offset,
                            pad->copy[i].buf, pad->copy[i].len);
        } else {
            memset(pad->copy[i].buf, 0, pad->copy[i].len);
        }
    }
    return ret;
}

/* --- reads --- */

int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset,
                                int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags)
{
    BlockDriverState *bs = child->bs;
    uint32_t align = bs->bl.request_alignment;
    BdrvTrackedRequest req;
    BdrvPadding pad;
    int ret = bdrv_check_range(bs, offset, bytes);

    trace_bdrv_co_pread(bs, offset, bytes, flags);
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    g_assert(qiov->size == (uint64_t)bytes);

    tracked_request_begin(bs, &req, ALIGN_DOWN(offset, align),
                          ALIGN_UP(offset + bytes, align) -
                          ALIGN_DOWN(offset, align), false, false);
    /* Not through a serialising write still changing these bytes. */
    wait_serialising_requests(bs, &req);
    if (bdrv_is_aligned(bs, offset, bytes, qiov)) {
        ret = bdrv_aligned_preadv(bs, offset, bytes, qiov, flags);
    } else {
        ret = bdrv_pad_init(bs, &pad, offset, bytes, qiov);
        if (ret == 0) {
            ret = bdrv_aligned_preadv(bs, pad.start, pad.end - pad.start,
                                      &pad.vec, flags);
        }
        if (ret == 0) {
            bdrv_pad_copy_out(&pad, qiov);
        }
        bdrv_pad_destroy(&pad);
    }
    tracked_request_end(bs, &req);
    trace_bdrv_co_pread_done(bs, offset, bytes, ret);
    return ret;
}

int coroutine_fn bdrv_co_pread(BdrvChild *child, int64_t offset,
                               int64_t bytes, void *buf,
                               BdrvRequestFlags flags)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, bytes);
    return bdrv_co_preadv(child, offset, bytes, &qiov, flags);
}

/* --- writes --- */

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

/*
 * Write [@offset, @offset + @bytes) from @qiov; NULL writes zeroes (used
 * for the unaligned edges of zeroing).  An unaligned request is
 * read-modify-write, serialised against overlapping requests.
 * @flags: BDRV_REQ_FUA, BDRV_REQ_SERIALISING and (for aligned requests)
 * BDRV_REQ_WRITE_COMPRESSED only.
 */
static int coroutine_fn bdrv_do_pwritev(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes, IOVector *qiov,
                                        BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ALIGN_DOWN(offset, align);
    int64_t end = ALIGN_UP(offset + bytes, align);
    bool aligned = start == offset && end == offset + bytes;
    BdrvTrackedRequest req;
    BdrvPadding pad;
    int ret;

    tracked_request_begin(bs, &req, start, end - start, true,
                          !aligned || (flags & BDRV_REQ_SERIALISING));
    flags &= BDRV_REQ_FUA | BDRV_REQ_WRITE_COMPRESSED;
    wait_serialising_requests(bs, &req);
    bdrv_debug_event(bs, qiov ? BLKDBG_PWRITEV : BLKDBG_PWRITEV_ZERO);
    if (qiov && bdrv_is_aligned(bs, offset, bytes, qiov)) {
        ret = bdrv_aligned_pwritev(bs, offset, bytes, qiov, flags);
    } else {
        ret = bdrv_pad_init(bs, &pad, offset, bytes, qiov);
        if (ret == 0) {
            ret = bdrv_pad_fill(bs, &pad, qiov);
        }
        if (ret == 0) {
            ret = bdrv_aligned_pwritev(bs, pad.start, pad.end - pad.start,
                                       &pad.vec, flags);
        }
        bdrv_pad_destroy(&pad);
    }
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    tracked_request_end(bs, &req);
    return ret;
}

/* After a write with data (it may have failed half-way): mark it dirty. */
static void bdrv_write_done(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int ret)
{
    if (ret == 0 && offset + bytes > bs->total_bytes) {
        /* The node grew (a file under a format): its bitmaps grow too. */
        bs->total_bytes = offset + bytes;
        bdrv_dirty_bitmaps_truncate(bs, bs->total_bytes);
    }
    bdrv_set_dirty(bs, offset, bytes);
}

/*
 * detect-zeroes: a write of zeroes within the node becomes a write-zeroes
 * (one that may unmap, with detect-zeroes=unmap), as in QEMU.
 */
static bool bdrv_write_is_zeroes(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes, const IOVector *qiov)
{
    return bs->detect_zeroes != BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF &&
           offset + bytes <= bs->total_bytes && iovector_is_zero(qiov);
}

bool bdrv_supports_compressed_writes(BlockDriverState *bs)
{
    for (; bs; bs = bdrv_filtered_bs(bs)) {
        if (!(bs->drv->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
            return false;
        }
        if (!bs->drv->is_filter) {
            return true;
        }
    }
    return false;       /* a filter without a child */
}

/*
 * A compressed write goes to the driver as it is: one it cannot take
 * fails, since compressing is all or nothing and padding it would mean
 * read-modify-write of compressed data.
 */
static int bdrv_check_compressed_write(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes)
{
    uint32_t align = bs->bl.request_alignment;

    if (!(bs->drv->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
        return -ENOTSUP;
    }
    if (!IS_ALIGNED(offset, align) ||
        (!IS_ALIGNED(bytes, align) && offset + bytes != bs->total_bytes)) {
        return -EINVAL;
    }
    return 0;
}

int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 BdrvRequestFlags flags)
{
    BlockDriverState *bs = child->bs;
    int ret = bdrv_check_write(child, offset, bytes, true);

    trace_bdrv_co_pwrite(bs, offset, bytes, flags);
    if (ret == 0 && (flags & BDRV_REQ_WRITE_COMPRESSED)) {
        ret = bdrv_check_compressed_write(bs, offset, bytes);
    }
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    g_assert(qiov->size == (uint64_t)bytes);
    if (bdrv_write_is_zeroes(bs, offset, bytes, qiov)) {
        BdrvRequestFlags zero_flags =
            flags & (BDRV_REQ_FUA | BDRV_REQ_SERIALISING);

        if (bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP) {
            zero_flags |= BDRV_REQ_MAY_UNMAP;
        }
        return bdrv_co_pwrite_zeroes(child, offset, bytes, zero_flags);
    }
    ret = bdrv_co_dirty_bitmaps_before_write(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    ret = bdrv_do_pwritev(bs, offset, bytes, qiov,
                          flags & (BDRV_REQ_FUA | BDRV_REQ_SERIALISING |
                                   BDRV_REQ_WRITE_COMPRESSED));
    bdrv_write_done(bs, offset, bytes, ret);
    trace_bdrv_co_pwrite_done(bs, offset, bytes, ret);
    return ret;
}

int coroutine_fn bdrv_co_pwrite(BdrvChild *child, int64_t offset,
                                int64_t bytes, const void *buf,
                                BdrvRequestFlags flags)
{
    IOVector qiov;

    /* The vector type has no const: writes only read through it. */
    iovector_init_buf(&qiov, (void *)buf, bytes);
    return bdrv_co_pwritev(child, offset, bytes, &qiov, flags);
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
        IOVector qiov;

        iovector_init_buf(&qiov, zeroes, n);
        ret = bdrv_aligned_pwritev(bs, offset, n, &qiov, flags);
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

    tracked_request_begin(bs, &req, offset, bytes, true,
                          flags & BDRV_REQ_SERIALISING);
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
    ret = bdrv_co_dirty_bitmaps_before_write(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    if (head_end > offset) {
        ret = bdrv_do_pwritev(bs, offset, head_end - offset, NULL,
                              flags & (BDRV_REQ_FUA | BDRV_REQ_SERIALISING));
    }
    if (ret == 0 && tail_start > head_end) {
        ret = bdrv_aligned_pwrite_zeroes(bs, head_end, tail_start - head_end,
                                         flags);
    }
    if (ret == 0 && end > tail_start) {
        ret = bdrv_do_pwritev(bs, tail_start, end - tail_start, NULL,
                              flags & (BDRV_REQ_FUA | BDRV_REQ_SERIALISING));
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
    ret = bdrv_co_dirty_bitmaps_before_write(bs, start, end - start);
    if (ret < 0) {
        return ret;
    }
    tracked_request_begin(bs, &req, start, end - start, true, false);
    wait_serialising_requests(bs, &req);
    ret = bs->drv->bdrv_co_pdiscard(bs, start, end - start);
    bdrv_set_dirty(bs, start, end - start);
    tracked_request_end(bs, &req);
    return ret == -ENOTSUP ? 0 : ret;
}

/* --- copy offload: whole blocks of both nodes, no padding, no bounce --- */

int coroutine_fn bdrv_co_copy_range_from(BdrvChild *src, int64_t src_offset,
                                         BdrvChild *dst, int64_t dst_offset,
                                         int64_t bytes,
                                         BdrvRequestFlags flags)
{
    BlockDriverState *bs = src->bs;
    BdrvTrackedRequest req;
    int ret = bdrv_check_range(bs, src_offset, bytes);

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (!bs->drv->bdrv_co_copy_range_from ||
        !bdrv_range_is_aligned(bs, src_offset, bytes)) {
        return -ENOTSUP;
    }
    tracked_request_begin(bs, &req, src_offset, bytes, false, false);
    wait_serialising_requests(bs, &req);
    ret = bs->drv->bdrv_co_copy_range_from(bs, src, src_offset, dst,
                                           dst_offset, bytes, flags);
    tracked_request_end(bs, &req);
    return ret;
}

int coroutine_fn bdrv_co_copy_range_to(BdrvChild *src, int64_t src_offset,
                                       BdrvChild *dst, int64_t dst_offset,
                                       int64_t bytes, BdrvRequestFlags flags)
{
    BlockDriverState *bs = dst->bs;
    BdrvTrackedRequest req;
    int ret = bdrv_check_write(dst, dst_offset, bytes, true);

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (!bs->drv->bdrv_co_copy_range_to ||
        !bdrv_range_is_aligned(bs, dst_offset, bytes)) {
        return -ENOTSUP;
    }
    ret = bdrv_co_dirty_bitmaps_before_write(bs, dst_offset, bytes);
    if (ret < 0) {
        return ret;
    }
    tracked_request_begin(bs, &req, dst_offset, bytes, true,
                          flags & BDRV_REQ_SERIALISING);
    wait_serialising_requests(bs, &req);
    ret = bs->drv->bdrv_co_copy_range_to(bs, src, src_offset, dst,
                                         dst_offset, bytes, flags);
    tracked_request_end(bs, &req);
    if (ret != -ENOTSUP) {
        bdrv_write_done(bs, dst_offset, bytes, ret);
    }
    return ret;
}

int coroutine_fn bdrv_co_copy_range(BdrvChild *src, int64_t src_offset,
                                    BdrvChild *dst, int64_t dst_offset,
                                    int64_t bytes, BdrvRequestFlags flags)
{
    int ret;

    trace_bdrv_co_copy_range(src->bs, src_offset, dst->bs, dst_offset,
                             bytes, flags);
    ret = bdrv_co_copy_range_from(src, src_offset, dst, dst_offset, bytes,
                                  flags & BDRV_REQ_SERIALISING);
    trace_bdrv_co_copy_range_done(src->bs, dst->bs, ret);
    return ret;
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

        if ((child->perm & BLK_PERM_WRITE) &&
            (child == bs->file || !bs->drv->flush_primary_only)) {
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
