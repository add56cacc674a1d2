/*
 * The "copy-before-write" filter driver: a point-in-time snapshot of its
 * file child, kept by copying old data to a target node just before it
 * is overwritten.
 *
 * Reads, flushes and block status go to @file.  A write, write-zeroes or
 * discard first runs block_copy() (block/block-copy.c) over the range
 * widened to whole clusters: whatever of it is still in the copy set is
 * copied to @target, and only then does the request go down.  The copy
 * set starts as every cluster, or as the @bitmap option; the backup job
 * shares the filter's block-copy state and copies the rest in the
 * background, so each cluster is copied once, by whoever comes first.
 *
 * When a copy fails (or times out, cbw-timeout), on-cbw-error decides:
 * break-guest-write fails the guest's request, which then writes nothing;
 * break-snapshot records the error once, and from then on the filter
 * copies nothing and the snapshot cannot be read.  A flush does not
 * reach the target: the copies only need to be durable if the snapshot
 * outlives the process, and the target's owner (the backup job, or the
 * fleecing user) flushes it.
 *
 * The snapshot API (for block/snapshot-access.c) reads the point in time
 * through two more cluster-granular bitmaps on the filter node:
 *  - access: what a reader may read (the initial copy set; a reader's
 *    discard removes clusters it no longer needs),
 *  - done: clusters whose old data a guest write copied to the target.
 * A snapshot read of a done cluster reads the target; any other cluster
 * still holds the old data in @file and is read there, as a *frozen
 * read*: a guest write that overlaps it copies first, marks its clusters
 * done and then waits for the frozen reads before writing.  Checking
 * "done" and registering the frozen read happen without yielding, and so
 * do marking "done" and looking for frozen reads, so a reader either
 * registers before the writer looks (the writer waits for it) or sees
 * the clusters done (and reads the target).
 *
 * All state is main loop only; every field below says when it changes.
 */
#include "block/block_int.h"
#include "block/bitmap-qmp.h"
#include "block/copy-before-write.h"
#include "block/dirty-bitmap.h"
#include "block/reqlist.h"
#include "block/backup/trace.h"
#include "qapi/qapi-types.h"

typedef struct BDRVCopyBeforeWriteState {
    /* Set at open, never changed. */
    BdrvChild *target;
    BlockCopyState *bcs;
    int64_t cluster_size;
    OnCbwError on_cbw_error;
    uint64_t cbw_timeout_ns;        /* 0: none */
    bool discard_source;            /* bdrv_cbw_append() only */
    BdrvDirtyBitmap *access_bitmap; /* disabled: changed by us only */
    BdrvDirtyBitmap *done_bitmap;   /* disabled: changed by us only */

    /*
     * Changed by requests (main loop coroutines).  frozen_reads: snapshot
     * reads of @file in flight, widened to whole clusters.
     */
    BlockReqList frozen_reads;
    int snapshot_error;             /* first failed copy (break-snapshot) */
} BDRVCopyBeforeWriteState;

static const BlockDriver bdrv_copy_before_write;

/*
 * bdrv_cbw_append() opens the filter through bdrv_new_open_driver(),
 * which passes no QAPI options: the open callback takes its children and
 * options from here.  Set only around that call; the open reads it
 * before it could yield.
 */
typedef struct CbwAppendArgs {
    BlockDriverState *source;
    BlockDriverState *target;
    const BdrvCbwOptions *opts;
    Error **errp;
    BlockDriverState *filter;       /* the result */
} CbwAppendArgs;

static CbwAppendArgs *cbw_pending_append;

/* --- opening --- */

/* QAPI's 'size' is unsigned; block-copy counts bytes in int64_t. */
static bool cbw_check_size(const char *name, bool has_value, uint64_t value,
                           Error **errp)
{
    if (has_value && value > INT64_MAX) {
        error_setg(errp, "%s too large: %" PRIu64 " > %" PRId64, name, value,
                   INT64_MAX);
        return false;
    }
    return true;
}

static bool cbw_check_options(const BlockdevOptionsCbw *opts, Error **errp)
{
    if (!cbw_check_size("__org.blockd_write-behind-buffer",
                        opts->has___org_blockd_write_behind_buffer,
                        opts->__org_blockd_write_behind_buffer, errp) ||
        !cbw_check_size("__org.blockd_write-behind-spill-size",
                        opts->has___org_blockd_write_behind_spill_size,
                        opts->__org_blockd_write_behind_spill_size, errp) ||
        !cbw_check_size("min-cluster-size", opts->has_min_cluster_size,
                        opts->min_cluster_size, errp)) {
        return false;
    }
    if (opts->has_min_cluster_size &&
        !IS_POWER_OF_2(opts->min_cluster_size)) {
        error_setg(errp, "min-cluster-size needs to be a power of 2");
        return false;
    }
    return true;
}

/* A disabled anonymous bitmap of cluster granularity: ours to change. */
static BdrvDirtyBitmap *cbw_create_bitmap(BlockDriverState *bs,
                                          int64_t cluster_size,
                                          Error **errp)
{
    BdrvDirtyBitmap *bitmap = bdrv_create_dirty_bitmap(bs, cluster_size,
                                                       NULL, errp);

    if (bitmap) {
        bdrv_disable_dirty_bitmap(bitmap);
    }
    return bitmap;
}

static void cbw_break_snapshot(BlockDriverState *bs, int ret)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;

    if (!s->snapshot_error) {
        s->snapshot_error = ret;
        trace_cbw_snapshot_broken(bs, ret);
    }
}

/*
 * A write behind failed: the guest write it let through already changed
 * the file, so the old data of those clusters is gone, whatever
 * on-cbw-error says.
 */
static void cbw_write_behind_failed(void *opaque, int ret)
{
    cbw_break_snapshot(opaque, ret);
}

/*
 * Everything after the children are attached: the block-copy state and
 * the snapshot bitmaps.  On failure the caller detaches the children.
 */
static int cbw_init(BlockDriverState *bs, const BdrvCbwOptions *opts,
                    Error **errp)
{
    ERRP_GUARD();
    BDRVCopyBeforeWriteState *s = bs->opaque;
    BlockCopyOptions bc_opts = {
        .compress = opts->compress,
        .min_cluster_size = opts->min_cluster_size,
        .discard_source = opts->discard_source,
        .use_copy_range = opts->use_copy_range,
        .write_behind_bytes = opts->write_behind_bytes,
        .write_behind_spill_bytes = opts->write_behind_spill_bytes,
        .write_behind_spill_dir = opts->write_behind_spill_dir,
    };

    reqlist_init(&s->frozen_reads);
    if (opts->write_behind_spill_dir && !opts->write_behind_spill_bytes) {
        error_setg(errp, "__org.blockd_write-behind-spill-dir needs "
                   "__org.blockd_write-behind-spill-size");
        return -EINVAL;
    }
    s->on_cbw_error = opts->on_cbw_error;
    s->cbw_timeout_ns = opts->cbw_timeout * (uint64_t)G_USEC_PER_SEC * 1000;
    s->discard_source = opts->discard_source;
    bs->total_bytes = bdrv_getlength(bs->file->bs);
    bs->bl.max_transfer = bs->file->bs->bl.max_transfer;

    s->bcs = block_copy_state_new(bs->file, s->target, opts->bitmap,
                                  &bc_opts, errp);
    if (!s->bcs) {
        error_prepend(errp, "Cannot create block-copy-state: ");
        return -EINVAL;
    }
    s->cluster_size = block_copy_cluster_size(s->bcs);
    block_copy_set_failure_callback(s->bcs, cbw_write_behind_failed, bs);
    s->done_bitmap = cbw_create_bitmap(bs, s->cluster_size, errp);
    if (!s->done_bitmap) {
        return -EINVAL;
    }
    s->access_bitmap = cbw_create_bitmap(bs, s->cluster_size, errp);
    if (!s->access_bitmap ||
        !bdrv_merge_dirty_bitmap(s->access_bitmap,
                                 block_copy_dirty_bitmap(s->bcs), NULL,
                                 errp)) {
        return -EINVAL;
    }
    return 0;
}

/* The close callback, also for an open that failed half way. */
static void cbw_close(BlockDriverState *bs)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;

    g_assert(reqlist_is_empty(&s->frozen_reads));
    if (s->access_bitmap) {
        bdrv_release_dirty_bitmap(s->access_bitmap);
        s->access_bitmap = NULL;
    }
    if (s->done_bitmap) {
        bdrv_release_dirty_bitmap(s->done_bitmap);
        s->done_bitmap = NULL;
    }
    if (s->bcs) {
        block_copy_state_free(s->bcs);
        s->bcs = NULL;
    }
}

static const BdrvChildRole cbw_file_role =
    BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED;

/* The open of bdrv_cbw_append(): the children are existing nodes. */
static int coroutine_fn cbw_open_appended(BlockDriverState *bs,
                                          CbwAppendArgs *args,
                                          Error **errp)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;

    bs->file = bdrv_attach_child(args->source, "file", cbw_file_role,
                                 &child_of_bds, bs, bs, 0, BLK_PERM_ALL,
                                 errp);
    if (!bs->file) {
        return -EINVAL;
    }
    s->target = bdrv_attach_child(args->target, "target", BDRV_CHILD_DATA,
                                  &child_of_bds, bs, bs, 0, BLK_PERM_ALL,
                                  errp);
    if (!s->target) {
        return -EINVAL;
    }
    return cbw_init(bs, args->opts, errp);
}

/* The open of blockdev-add. */
static int coroutine_fn cbw_open_blockdev(BlockDriverState *bs,
                                          BlockdevOptionsCbw *opts,
                                          Error **errp)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    BdrvCbwOptions cbw_opts = {
        .on_cbw_error = opts->has_on_cbw_error
                        ? opts->on_cbw_error
                        : ON_CBW_ERROR_BREAK_GUEST_WRITE,
        .cbw_timeout = opts->has_cbw_timeout ? opts->cbw_timeout : 0,
        .min_cluster_size = opts->has_min_cluster_size
                            ? (int64_t)opts->min_cluster_size : 0,
        .write_behind_bytes = opts->has___org_blockd_write_behind_buffer
                              ? opts->__org_blockd_write_behind_buffer : 0,
        .write_behind_spill_bytes =
            opts->has___org_blockd_write_behind_spill_size
            ? opts->__org_blockd_write_behind_spill_size : 0,
        .write_behind_spill_dir = opts->__org_blockd_write_behind_spill_dir,
    };

    if (!cbw_check_options(opts, errp)) {
        return -EINVAL;
    }
    bs->file = bdrv_open_child(bs, opts->file, "file", cbw_file_role, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    s->target = bdrv_open_child(bs, opts->target, "target", BDRV_CHILD_DATA,
                                errp);
    if (!s->target) {
        return -EINVAL;
    }
    if (opts->bitmap) {
        cbw_opts.bitmap = block_dirty_bitmap_lookup(opts->bitmap->node,
                                                    opts->bitmap->name,
                                                    NULL, errp);
        if (!cbw_opts.bitmap) {
            return -EINVAL;
        }
    }
    return cbw_init(bs, &cbw_opts, errp);
}

/* No options: bdrv_cbw_append() is opening the filter. */
static int coroutine_fn cbw_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    int ret;

    if (options) {
        ret = cbw_open_blockdev(bs, &options->u.copy_before_write, errp);
    } else {
        g_assert(cbw_pending_append);
        ret = cbw_open_appended(bs, g_steal_pointer(&cbw_pending_append),
                                errp);
    }
    if (ret < 0) {
        cbw_close(bs);
    }
    return ret;
}

/*
 * The target: we write to it, and others may do anything but resize it
 * (a fleecing user reads it).  The file: what the parents take, plus a
 * consistent read for the copies (and write for discard-source); while
 * the filter has parents, nobody else may write to or resize the file,
 * since such writes would bypass the copy.
 */
static void cbw_child_perm(BlockDriverState *bs, BdrvChild *child,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *nperm, uint64_t *nshared)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;

    if (child != bs->file) {
        *nperm = BLK_PERM_WRITE;
        *nshared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
        return;
    }
    *nperm = parent_perm;
    *nshared = parent_shared;
    if (bs->parents) {
        *nperm |= BLK_PERM_CONSISTENT_READ;
        if (s->discard_source) {
            *nperm |= BLK_PERM_WRITE;
        }
        *nshared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
    }
}

/* --- the filter --- */

/*
 * Copy the old data of the clusters [@offset, +@bytes) touches before a
 * request changes them.  Returns -errno if the request must fail.
 */
static int coroutine_fn cbw_copy_before_write(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    int64_t start = ALIGN_DOWN(offset, s->cluster_size);
    int64_t end = ALIGN_UP(offset + bytes, s->cluster_size);
    bool error_is_read = false;
    int ret;

    if (!s->snapshot_error) {
        trace_cbw_copy_before_write(bs, start, end - start);
        ret = block_copy(s->bcs, start, end - start, s->cbw_timeout_ns,
                         &error_is_read);
        if (ret < 0) {
            trace_cbw_copy_failed(bs, start, end - start, ret, error_is_read);
            if (s->on_cbw_error == ON_CBW_ERROR_BREAK_GUEST_WRITE) {
                return ret;
            }
            cbw_break_snapshot(bs, ret);
        } else {
            bdrv_set_dirty_bitmap(s->done_bitmap, start, end - start);
        }
    }
    /*
     * Snapshot readers still reading the old data from the file (also
     * when the snapshot is broken: a read that started before must not
     * see the new data).
     */
    reqlist_wait_all(&s->frozen_reads, start, end - start);
    return 0;
}

static int coroutine_fn cbw_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn cbw_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    int ret = cbw_copy_before_write(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn cbw_co_pwrite_zeroes(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    int ret = cbw_copy_before_write(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn cbw_co_pdiscard(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes)
{
    int ret = cbw_copy_before_write(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int coroutine_fn cbw_co_block_status(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    *pnum = bytes;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW;
}

static int cbw_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return bdrv_get_info(bs->file->bs, bdi);
}

static const BlockDriver bdrv_copy_before_write = {
    .format_name = "copy-before-write",
    .instance_size = sizeof(BDRVCopyBeforeWriteState),
    .is_filter = true,
    .flush_primary_only = true,
    .bdrv_open = cbw_open,
    .bdrv_close = cbw_close,
    .bdrv_child_perm = cbw_child_perm,
    .bdrv_co_preadv = cbw_co_preadv,
    .bdrv_co_pwritev = cbw_co_pwritev,
    .bdrv_co_pwrite_zeroes = cbw_co_pwrite_zeroes,
    .bdrv_co_pdiscard = cbw_co_pdiscard,
    .bdrv_co_block_status = cbw_co_block_status,
    .bdrv_get_info = cbw_get_info,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) cbw_register(void)
{
    bdrv_register(&bdrv_copy_before_write);
}

/* --- the snapshot API --- */

bool bdrv_is_cbw(BlockDriverState *bs)
{
    return bs->drv == &bdrv_copy_before_write;
}

/*
 * Where the snapshot's [@offset, +@bytes) starts to live: the target for
 * a run of done clusters, else the file up to the next done cluster
 * (registered as a frozen read in *@frozen, to be ended with
 * cbw_snapshot_unlock()).  *@pnum is the run's length.  -EACCES if the
 * snapshot is broken or the range is not all readable.
 *
 * With write-behind, a done cluster may still be on its way to the
 * target: the caller first waits for the writes behind in the range,
 * and calls this without yielding after the wait.  Clusters that become
 * done later were not done here, so they are read from the file as a
 * frozen read, which the guest write waits for.
 */
static int cbw_snapshot_lock(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int64_t *pnum,
                             BdrvChild **child, BlockReq **frozen)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    const HBitmap *done = bdrv_dirty_bitmap_bits(s->done_bitmap);
    int64_t end = offset + bytes;
    int64_t run_end, frozen_start;
    BlockReq *fr;

    *frozen = NULL;
    if (s->snapshot_error ||
        hbitmap_next_clean(bdrv_dirty_bitmap_bits(s->access_bitmap),
                           offset, bytes) >= 0) {
        return -EACCES;
    }
    if (hbitmap_get(done, offset)) {
        run_end = hbitmap_next_clean(done, offset, bytes);
        *pnum = (run_end < 0 ? end : run_end) - offset;
        *child = s->target;
        return 0;
    }
    run_end = hbitmap_next_dirty(done, offset, bytes);
    *pnum = (run_end < 0 ? end : run_end) - offset;
    *child = bs->file;

    /* Guest writes copy and wait in whole clusters. */
    frozen_start = ALIGN_DOWN(offset, s->cluster_size);
    fr = g_new0(BlockReq, 1);
    reqlist_add(&s->frozen_reads, fr, frozen_start,
                ALIGN_UP(offset + *pnum, s->cluster_size) - frozen_start);
    *frozen = fr;
    return 0;
}

static void cbw_snapshot_unlock(BlockDriverState *bs, BlockReq *fr)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;

    if (!fr) {
        return;
    }
    reqlist_remove(&s->frozen_reads, fr);
    g_free(fr);
}

int coroutine_fn bdrv_cbw_snapshot_preadv(BlockDriverState *bs,
                                          int64_t offset, int64_t bytes,
                                          IOVector *qiov)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    int64_t done = 0;

    while (done < bytes) {
        BlockReq *fr;
        BdrvChild *child;
        IOVector piece;
        int64_t n;
        int ret;

        /* No yield between this wait and the lock: see cbw_snapshot_lock */
        block_copy_wait_behind_writes(s->bcs, offset + done, bytes - done);
        ret = cbw_snapshot_lock(bs, offset + done, bytes - done, &n, &child,
                                &fr);
        if (ret < 0) {
            return ret;
        }
        iovector_init_slice(&piece, qiov, done, n);
        ret = bdrv_co_preadv(child, offset + done, n, &piece, 0);
        iovector_destroy(&piece);
        cbw_snapshot_unlock(bs, fr);
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

int coroutine_fn bdrv_cbw_snapshot_block_status(BlockDriverState *bs,
                                                int64_t offset,
                                                int64_t bytes,
                                                int64_t *pnum)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    BlockReq *fr;
    BdrvChild *child;
    int64_t n;
    int depth;
    int ret;

    block_copy_wait_behind_writes(s->bcs, offset, bytes);
    ret = cbw_snapshot_lock(bs, offset, bytes, &n, &child, &fr);
    if (ret < 0) {
        return ret;
    }
    ret = bdrv_co_block_status(child->bs, offset, n, pnum, &depth);
    cbw_snapshot_unlock(bs, fr);
    if (ret < 0) {
        return ret;
    }
    /*
     * The snapshot is the whole picture (it has no backing file of its
     * own): what the source's backing chain or the target holds is the
     * snapshot's own.
     */
    return ret | BDRV_BLOCK_ALLOCATED;
}

int coroutine_fn bdrv_cbw_snapshot_pdiscard(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes)
{
    BDRVCopyBeforeWriteState *s = bs->opaque;
    int64_t start = ALIGN_UP(offset, s->cluster_size);
    int64_t end = ALIGN_DOWN(offset + bytes, s->cluster_size);

    if (end <= start) {
        return 0;
    }
    bdrv_reset_dirty_bitmap(s->access_bitmap, start, end - start);
    /* Nobody will read these clusters: guest writes need not copy them. */
    bdrv_reset_dirty_bitmap(block_copy_dirty_bitmap(s->bcs), start,
                            end - start);
    return bdrv_co_pdiscard(s->target, start, end - start);
}

bool bdrv_cbw_snapshot_broken(BlockDriverState *filter)
{
    BDRVCopyBeforeWriteState *s = filter->opaque;

    g_assert(bdrv_is_cbw(filter));
    return s->snapshot_error != 0;
}

/* --- insertion by the backup job --- */

static void coroutine_fn cbw_append_entry(void *opaque)
{
    CbwAppendArgs *args = opaque;

    cbw_pending_append = args;
    args->filter = bdrv_new_open_driver(&bdrv_copy_before_write,
                                        args->opts->filter_node_name,
                                        true, args->errp);
    /* Cleared by the open, unless the node name was refused before. */
    cbw_pending_append = NULL;
}

BlockDriverState *bdrv_cbw_append(BlockDriverState *source,
                                  BlockDriverState *target,
                                  const BdrvCbwOptions *opts,
                                  BlockCopyState **bcs, Error **errp)
{
    CbwAppendArgs args = {
        .source = source,
        .target = target,
        .opts = opts,
        .errp = errp,
    };
    BDRVCopyBeforeWriteState *s;

    /*
     * No request may reach @source between taking the copy set and
     * moving its parents onto the filter, or its old data would be lost.
     */
    bdrv_drained_begin(source);
    co_run_sync(cbw_append_entry, &args);
    if (args.filter && !bdrv_replace_node(source, args.filter, errp)) {
        bdrv_unref(args.filter);
        args.filter = NULL;
    }
    bdrv_drained_end(source);
    if (!args.filter) {
        return NULL;
    }
    s = args.filter->opaque;
    *bcs = s->bcs;
    return args.filter;
}

void bdrv_cbw_drop(BlockDriverState *filter)
{
    Error *local_err = NULL;

    g_assert(bdrv_is_cbw(filter));
    if (!bdrv_drop_filter(filter, &local_err)) {
        /* Moving the parents back down only relaxes permissions. */
        error_report_err(local_err);
    }
    bdrv_unref(filter);
}
