/*
 * BlockBackend: a user's handle on a node (see block-backend.h).
 *
 * The backend owns the root edge into the graph, checks each request's
 * range against the node's current length (an NBD client must never make
 * the graph see an out-of-range request), and counts its own requests so
 * that a user going away can wait for exactly its own I/O.
 *
 * While the node below is drained (drain.c), the backend is quiesced: a
 * new request waits in blk_request_begin() until the drained section
 * ends -- unless the user has drain ops, which then hold off the user's
 * own requests (a job pauses), so its requests are never queued.
 */
#include "block/block-backend.h"
#include "block/block_int.h"

struct BlockBackend {
    char *user;             /* "NBD export 'e0'", for messages */
    BdrvChild *root;
    unsigned in_flight;
    unsigned quiesce_counter;
    CoQueue queued_requests;    /* requests held while quiesced */
    const BlockBackendDrainOps *drain_ops;  /* NULL: queue requests */
    void *drain_opaque;
};

static char *blk_root_get_parent_desc(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    return g_strdup(blk->user);
}

static void blk_root_drained_begin(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    if (blk->quiesce_counter++ == 0 && blk->drain_ops) {
        blk->drain_ops->drained_begin(blk->drain_opaque);
    }
}

static void blk_root_drained_end(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    g_assert(blk->quiesce_counter > 0);
    if (--blk->quiesce_counter > 0) {
        return;
    }
    if (blk->drain_ops) {
        blk->drain_ops->drained_end(blk->drain_opaque);
    }
    co_queue_restart_all(&blk->queued_requests);
}

static bool blk_root_drained_poll(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    return blk->in_flight > 0 ||
           (blk->drain_ops && blk->drain_ops->drained_poll &&
            blk->drain_ops->drained_poll(blk->drain_opaque));
}

static const BdrvChildClass child_root = {
    .get_parent_desc = blk_root_get_parent_desc,
    .drained_begin = blk_root_drained_begin,
    .drained_end = blk_root_drained_end,
    .drained_poll = blk_root_drained_poll,
};

BlockBackend *blk_new_with_bs(BlockDriverState *bs, const char *user,
                              uint64_t perm, uint64_t shared_perm,
                              Error **errp)
{
    BlockBackend *blk = g_new0(BlockBackend, 1);

    blk->user = g_strdup(user);
    co_queue_init(&blk->queued_requests);
    blk->root = bdrv_attach_child(bs, "root", BDRV_CHILD_DATA, &child_root,
                                  blk, NULL, perm, shared_perm, errp);
    if (!blk->root) {
        g_free(blk->user);
        g_free(blk);
        return NULL;
    }
    return blk;
}

void blk_drain(BlockBackend *blk)
{
    while (blk->in_flight > 0) {
        bdrv_drain_wait_event();
    }
}

void blk_unref(BlockBackend *blk)
{
    if (!blk) {
        return;
    }
    blk_drain(blk);
    bdrv_detach_child(blk->root);
    g_free(blk->user);
    g_free(blk);
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    return blk->root->bs;
}

int64_t blk_getlength(BlockBackend *blk)
{
    return bdrv_getlength(blk_bs(blk));
}

uint32_t blk_get_request_alignment(BlockBackend *blk)
{
    return blk_bs(blk)->bl.request_alignment;
}

void blk_set_drain_ops(BlockBackend *blk, const BlockBackendDrainOps *ops,
                       void *opaque)
{
    blk->drain_ops = ops;
    blk->drain_opaque = opaque;
    if (blk->quiesce_counter > 0) {
        ops->drained_begin(opaque);     /* attached inside a section */
    }
}

/* Hold a new request while the backend is quiesced, then count it. */
static void coroutine_fn blk_inc_in_flight(BlockBackend *blk)
{
    while (blk->quiesce_counter > 0 && !blk->drain_ops) {
        co_queue_wait(&blk->queued_requests);
    }
    blk->in_flight++;
}

static void blk_dec_in_flight(BlockBackend *blk)
{
    if (--blk->in_flight == 0) {
        bdrv_wake_drainers();
    }
}

/*
 * Wait out a drained section, then check a request's range (the node may
 * have changed meanwhile) and count it in flight; every successful call
 * is paired with blk_dec_in_flight().
 */
static int coroutine_fn blk_request_begin(BlockBackend *blk, int64_t offset,
                                          int64_t bytes)
{
    int64_t len;

    blk_inc_in_flight(blk);
    len = blk_getlength(blk);
    if (offset < 0 || bytes < 0 || offset > len || bytes > len - offset) {
        blk_dec_in_flight(blk);
        return -EIO;
    }
    return 0;
}

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset,
                               int64_t bytes, IOVector *qiov,
                               BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_preadv(blk->root, offset, bytes, qiov, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset,
                                int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pwritev(blk->root, offset, bytes, qiov, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset,
                              int64_t bytes, void *buf,
                              BdrvRequestFlags flags)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, bytes);
    return blk_co_preadv(blk, offset, bytes, &qiov, flags);
}

int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset,
                               int64_t bytes, const void *buf,
                               BdrvRequestFlags flags)
{
    IOVector qiov;

    /* The vector type has no const: writes only read through it. */
    iovector_init_buf(&qiov, (void *)buf, bytes);
    return blk_co_pwritev(blk, offset, bytes, &qiov, flags);
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset,
                                      int64_t bytes, BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pwrite_zeroes(blk->root, offset, bytes, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset,
                                 int64_t bytes)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pdiscard(blk->root, offset, bytes);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    int ret;

    blk_inc_in_flight(blk);
    ret = bdrv_co_flush(blk_bs(blk));
    blk_dec_in_flight(blk);
    return ret;
}

int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset,
                                     int64_t bytes, int64_t *pnum,
                                     int *depth)
{
    int ret = blk_request_begin(blk, offset, bytes);
    int layer;

    if (ret == 0) {
        ret = bdrv_co_block_status(blk_bs(blk), offset, bytes, pnum, &layer);
        blk_dec_in_flight(blk);
    }
    if (ret >= 0 && depth) {
        *depth = layer;
    }
    return ret;
}
