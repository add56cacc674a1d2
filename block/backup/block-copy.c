/*
 * block-copy: copy clusters from a source to a target exactly once, for
 * whoever asks first.  Contract: include/block/block-copy.h; the model,
 * the task life cycle and who waits for whom: docs/devel/block-copy.rst.
 *
 * In short: the copy bitmap holds the clusters still to copy.  A call
 * takes a dirty run, clears its bits and registers it in s->reqs in one
 * step (no yield in between), so no other call can take it; that range
 * is a *task*.  The task asks block status for its start (it may shrink
 * to the status run, giving the tail back to the bitmap), then copies
 * (bounce buffer, or write-zeroes for a zero run, or nothing for an
 * unallocated run under sync=top), and ends: on failure it sets its bits
 * again, so the clusters are copied later by someone; either way it
 * leaves s->reqs and wakes whoever waits for it.
 *
 * A call keeps creating tasks while its range has dirty bits; once it
 * has none, it waits for the first in-flight task that overlaps its
 * range and looks again (that task may fail and re-dirty its bits), and
 * it ends when the range is clean and nothing overlapping is in flight.
 * Only then is every cluster of the range known to be on the target.
 *
 * Write-behind, a blockd extension for synchronous calls, is in
 * block-copy-behind.c; the structures both files share are in
 * block-copy-int.h.
 *
 * Everything runs on the main loop's one thread; fields are grouped by
 * who changes them, and no field needs a lock.
 */
#include "block/backup/block-copy-int.h"
#include "block/dirty-bitmap.h"
#include "util/main-loop.h"
#include "block/backup/trace.h"

enum {
    /* The size a read/write task aims at (QEMU's). */
    BLOCK_COPY_CHUNK_SIZE = 1024 * 1024,
};

/* --- creation --- */

/*
 * The copy granularity (reference §3.2): the target's cluster, so that a
 * target with backing data never gets part of a cluster written.
 */
static int64_t block_copy_calculate_cluster_size(BlockDriverState *target,
                                                 int64_t min_cluster_size,
                                                 Error **errp)
{
    int64_t floor = MAX(BLOCK_COPY_MIN_CLUSTER_SIZE, min_cluster_size);
    BlockDriverInfo bdi;
    int ret = bdrv_get_info(target, &bdi);

    if (ret < 0 && target->backing) {
        /* Nothing tells the size; QEMU takes the default silently. */
        return floor;
    }
    if (ret == -ENOTSUP) {
        warn_report("The target '%s' reports no cluster size and has no "
                    "backing file: copying in clusters of %" PRId64
                    " bytes.  If its real cluster size is larger, the "
                    "backup may be unusable", target->node_name, floor);
        return floor;
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Couldn't determine the cluster size "
                         "of the target image, which has no backing file");
        error_append_hint(errp, "Aborting, since this may create an "
                          "unusable destination image\n");
        return -1;
    }
    return MAX(floor, bdi.cluster_size);
}

/*
 * Legacy fleecing: the target is an overlay whose backing chain holds
 * the source (perhaps under filters), exported to readers.  A reader of
 * a cluster not yet copied reads through to the source; if our write of
 * that cluster and then the guest's write to the source overtook the
 * read, it would return new data.  Serialising target writes wait for
 * such reads.
 */
static bool block_copy_source_backs_target(BdrvChild *source,
                                           BdrvChild *target)
{
    for (BlockDriverState *bs = target->bs; bs;
         bs = bs->backing ? bs->backing->bs : bdrv_filtered_bs(bs)) {
        if (bs == source->bs) {
            return true;
        }
    }
    return false;
}

/*
 * The largest task: QEMU's 1 MiB aim, but whole clusters, and what both
 * nodes take in one request (the I/O core would split it otherwise).
 */
static int64_t block_copy_calculate_chunk_size(BlockCopyState *s,
                                               bool compress)
{
    int64_t max_transfer = INT_MAX;

    if (s->source->bs->bl.max_transfer) {
        max_transfer = MIN(max_transfer, s->source->bs->bl.max_transfer);
    }
    if (s->target->bs->bl.max_transfer) {
        max_transfer = MIN(max_transfer, s->target->bs->bl.max_transfer);
    }
    max_transfer = ALIGN_DOWN(max_transfer, s->cluster_size);
    if (compress || max_transfer < s->cluster_size) {
        return s->cluster_size;
    }
    return MIN(MAX(s->cluster_size, BLOCK_COPY_CHUNK_SIZE), max_transfer);
}

/*
 * A spill holds whole clusters, and spilled data goes to the target
 * through write-behind memory, at least a cluster at a time.
 */
static bool block_copy_check_spill(const BlockCopyOptions *opts,
                                   int64_t cluster_size, Error **errp)
{
    if (opts->write_behind_spill_bytes < (uint64_t)cluster_size) {
        error_setg(errp, "The write-behind spill size (%" PRIu64 " bytes) "
                   "is less than a cluster (%" PRId64 " bytes)",
                   opts->write_behind_spill_bytes, cluster_size);
        return false;
    }
    if (opts->write_behind_bytes < (uint64_t)cluster_size) {
        error_setg(errp, "A write-behind spill needs a write-behind buffer "
                   "of at least a cluster (%" PRId64 " bytes)",
                   cluster_size);
        return false;
    }
    return true;
}

BlockCopyState *block_copy_state_new(BdrvChild *source, BdrvChild *target,
                                     const BdrvDirtyBitmap *bitmap,
                                     const BlockCopyOptions *opts,
                                     Error **errp)
{
    static const BlockCopyOptions defaults;
    g_autofree BlockCopyState *s = NULL;
    g_autoptr(BlockCopySpill) spill = NULL;
    BlockDriverState *owner = source->parent_bs ? source->parent_bs
                                                : source->bs;
    int64_t cluster_size;

    if (!opts) {
        opts = &defaults;
    }
    if (opts->min_cluster_size < 0 ||
        (opts->min_cluster_size && !IS_POWER_OF_2(opts->min_cluster_size))) {
        error_setg(errp, "min-cluster-size needs to be a power of 2");
        return NULL;
    }
    if (opts->write_behind_bytes && opts->discard_source) {
        error_setg(errp, "Write-behind cannot be used with discard-source");
        return NULL;
    }
    if (opts->write_behind_bytes > INT64_MAX) {
        error_setg(errp, "write-behind-bytes is too large");
        return NULL;
    }
    if (opts->write_behind_spill_bytes > INT64_MAX) {
        error_setg(errp, "write-behind-spill-bytes is too large");
        return NULL;
    }
    if (opts->compress && !bdrv_supports_compressed_writes(target->bs)) {
        error_setg(errp, "Compression is not supported for this drive %s",
                   target->bs->node_name);
        return NULL;
    }
    cluster_size = block_copy_calculate_cluster_size(target->bs,
                                                     opts->min_cluster_size,
                                                     errp);
    if (cluster_size < 0) {
        return NULL;
    }
    if (cluster_size > BDRV_BITMAP_MAX_GRANULARITY) {
        error_setg(errp, "Cluster size %" PRId64 " is too large for a "
                   "copy bitmap", cluster_size);
        return NULL;
    }
    if (opts->write_behind_spill_bytes) {
        if (!block_copy_check_spill(opts, cluster_size, errp)) {
            return NULL;
        }
        spill = block_copy_spill_new(opts->write_behind_spill_dir
                                     ? opts->write_behind_spill_dir
                                     : BLOCK_COPY_SPILL_DIR,
                                     opts->write_behind_spill_bytes,
                                     cluster_size, errp);
        if (!spill) {
            return NULL;
        }
    }

    s = g_new0(BlockCopyState, 1);
    s->source = source;
    s->target = target;
    s->owner = owner;
    s->len = bdrv_getlength(source->bs);
    s->cluster_size = cluster_size;
    s->chunk_size = block_copy_calculate_chunk_size(s, opts->compress);
    s->discard_source = opts->discard_source;
    if (block_copy_source_backs_target(source, target)) {
        s->write_flags = BDRV_REQ_SERIALISING;
    }
    if (opts->compress) {
        s->write_flags |= BDRV_REQ_WRITE_COMPRESSED;
    }
    s->write_behind = opts->write_behind_bytes > 0;
    s->behind_free = opts->write_behind_bytes;
    co_queue_init(&s->behind_mem_waiters);
    s->spill_piece = MIN(ALIGN_DOWN(s->behind_free, cluster_size),
                         s->chunk_size);
    s->use_copy_range = opts->use_copy_range && !opts->compress;
    reqlist_init(&s->reqs);
    reqlist_init(&s->behind_reqs);
    s->mem_free = BLOCK_COPY_MEMORY_BUDGET;
    co_queue_init(&s->mem_waiters);
    g_queue_init(&s->calls);

    s->copy_bitmap = bdrv_create_dirty_bitmap(owner, cluster_size, NULL,
                                              errp);
    if (!s->copy_bitmap) {
        return NULL;
    }
    /* It is a to-do list, not a record of writes. */
    bdrv_disable_dirty_bitmap(s->copy_bitmap);
    if (!bitmap) {
        bdrv_set_dirty_bitmap(s->copy_bitmap, 0, s->len);
    } else if (!bdrv_merge_dirty_bitmap(s->copy_bitmap, bitmap, NULL,
                                        errp)) {
        error_prepend(errp, "Failed to merge bitmap '%s' to internal "
                      "copy-bitmap: ", bdrv_dirty_bitmap_name(bitmap));
        bdrv_release_dirty_bitmap(s->copy_bitmap);
        return NULL;
    }
    s->spare_buffers = g_ptr_array_new_with_free_func(blk_vfree);
    s->spill = g_steal_pointer(&spill);
    trace_block_copy_state_new(s, cluster_size, s->chunk_size);
    return g_steal_pointer(&s);
}

void block_copy_state_free(BlockCopyState *s)
{
    if (!s) {
        return;
    }
    /* Calls abandoned by a timed-out block_copy() and writes behind. */
    while (!g_queue_is_empty(&s->calls) ||
           !reqlist_is_empty(&s->behind_reqs)) {
        bdrv_drain_wait_event();
    }
    g_assert(reqlist_is_empty(&s->reqs));
    g_ptr_array_free(s->spare_buffers, true);
    block_copy_spill_free(s->spill);
    bdrv_release_dirty_bitmap(s->copy_bitmap);
    g_free(s);
}

int64_t block_copy_cluster_size(BlockCopyState *s)
{
    return s->cluster_size;
}

BdrvDirtyBitmap *block_copy_dirty_bitmap(BlockCopyState *s)
{
    return s->copy_bitmap;
}

uint64_t block_copy_remaining_bytes(BlockCopyState *s)
{
    return bdrv_dirty_bitmap_count(s->copy_bitmap) + s->in_flight_bytes;
}

void block_copy_set_progress_callback(BlockCopyState *s,
                                      BlockCopyProgressFunc *cb,
                                      void *opaque)
{
    s->progress_cb = cb;
    s->progress_opaque = opaque;
}

void block_copy_set_speed(BlockCopyState *s, uint64_t speed)
{
    ratelimit_set_speed(&s->rate_limit, speed);
    /* Calls sleeping off the old limit look at the new one. */
    for (GList *l = s->calls.head; l; l = l->next) {
        block_copy_kick(l->data);
    }
}

void block_copy_set_skip_unallocated(BlockCopyState *s, bool skip)
{
    s->skip_unallocated = skip;
}

/* --- memory budget --- */

static void coroutine_fn block_copy_mem_get(BlockCopyState *s, int64_t bytes)
{
    while (s->mem_free < bytes) {
        co_queue_wait(&s->mem_waiters);
    }
    s->mem_free -= bytes;
}

static void block_copy_mem_put(BlockCopyState *s, int64_t bytes)
{
    s->mem_free += bytes;
    /* Waiters want different amounts: each looks for itself. */
    co_queue_restart_all(&s->mem_waiters);
}

/*
 * Bounce buffers of a whole chunk are kept for the next task while calls
 * run.  A fresh buffer of a MiB costs the kernel more than copying into
 * it: it maps the pages, zeroes them on the first touch (O_DIRECT pins
 * them), and unmaps them when freed, which was half of a full backup's
 * CPU time.  The spares never outnumber the buffers that were in use at
 * once, which the memory budget bounds, and go when the last call ends.
 */
static void *block_copy_buffer_get(BlockCopyState *s, int64_t bytes)
{
    if (bytes == s->chunk_size && s->spare_buffers->len > 0) {
        return g_ptr_array_steal_index_fast(s->spare_buffers,
                                            s->spare_buffers->len - 1);
    }
    return blk_memalign(bytes);
}

static void block_copy_buffer_put(BlockCopyState *s, void *buf,
                                  int64_t bytes)
{
    if (buf && bytes == s->chunk_size && !g_queue_is_empty(&s->calls)) {
        g_ptr_array_add(s->spare_buffers, buf);
    } else {
        blk_vfree(buf);
    }
}

void *coroutine_fn block_copy_bounce_get(BlockCopyState *s, int64_t bytes)
{
    block_copy_mem_get(s, block_copy_mem_cost(bytes));
    return block_copy_buffer_get(s, bytes);
}

void block_copy_bounce_put(BlockCopyState *s, void *buf, int64_t bytes)
{
    block_copy_buffer_put(s, buf, bytes);
    block_copy_mem_put(s, block_copy_mem_cost(bytes));
}

static void block_copy_free_spare_buffers(BlockCopyState *s)
{
    g_ptr_array_set_size(s->spare_buffers, 0);
}

/* --- tasks --- */

/*
 * Work that outlives the call that started it (writes behind, timed-out
 * synchronous calls) counts in the owner's in_flight, so that drains of
 * the owner wait for it.
 */
void block_copy_owner_inc_in_flight(BlockCopyState *s)
{
    s->owner->in_flight++;
}

void block_copy_owner_dec_in_flight(BlockCopyState *s)
{
    g_assert(s->owner->in_flight > 0);
    s->owner->in_flight--;
    /* Drains, and block_copy_state_free(), look again. */
    bdrv_wake_drainers();
}


/*
 * Take the first dirty run in [@offset, @end) of at most
 * call->max_task_bytes: clear its bits and register it, without
 * yielding, so that no other call can take it.  NULL if all is clean.
 */
static BlockCopyTask *block_copy_task_create(BlockCopyCallState *call,
                                             int64_t offset, int64_t end)
{
    BlockCopyState *s = call->s;
    const HBitmap *bits = bdrv_dirty_bitmap_bits(s->copy_bitmap);
    uint64_t start, bytes;
    BlockCopyTask *task;

    if (!hbitmap_next_dirty_area(bits, offset, end, call->max_task_bytes,
                                 &start, &bytes)) {
        return NULL;
    }
    /* The bitmap may be longer than the source (its last granule). */
    bytes = MIN(bytes, (uint64_t)(s->len - start));
    task = g_new0(BlockCopyTask, 1);
    task->s = s;
    task->call = call;
    bdrv_reset_dirty_bitmap(s->copy_bitmap, start, bytes);
    s->in_flight_bytes += bytes;
    reqlist_add(&s->reqs, &task->req, start, bytes);
    return task;
}

/* The task covers only its first @new_bytes: give the rest back. */
static void block_copy_task_shrink(BlockCopyTask *task, int64_t new_bytes)
{
    BlockCopyState *s = task->s;
    int64_t tail = task->req.bytes - new_bytes;

    if (tail == 0) {
        return;
    }
    bdrv_set_dirty_bitmap(s->copy_bitmap, task->req.offset + new_bytes,
                          tail);
    s->in_flight_bytes -= tail;
    reqlist_shrink(&task->req, new_bytes);
}

/*
 * The task is over: on failure its clusters are to be copied again; on
 * success its bytes count as progress.  Wakes whoever waits for it.
 */
static void block_copy_task_end(BlockCopyTask *task, int ret)
{
    BlockCopyState *s = task->s;

    trace_block_copy_task_end(task->call, task->req.offset, task->req.bytes,
                              ret);
    if (ret < 0) {
        bdrv_set_dirty_bitmap(s->copy_bitmap, task->req.offset,
                              task->req.bytes);
    }
    s->in_flight_bytes -= task->req.bytes;
    if (ret == 0 && s->progress_cb) {
        s->progress_cb(s->progress_opaque, task->req.bytes);
    }
    reqlist_remove(&s->reqs, &task->req);
}

/*
 * What the source holds at the start of [@offset, +@bytes): BDRV_BLOCK_*
 * for the first *@pnum bytes, whole clusters.  A failed query, or a run
 * shorter than a cluster, counts as one cluster of data: copying is
 * always right, only slower.
 */
static int coroutine_fn block_copy_block_status(BlockCopyState *s,
                                                int64_t offset,
                                                int64_t bytes,
                                                int64_t *pnum)
{
    int64_t num;
    int depth;
    int ret = bdrv_co_block_status(s->source->bs, offset, bytes, &num,
                                   &depth);

    if (ret < 0 || (num < s->cluster_size && offset + num < s->len)) {
        *pnum = MIN(s->cluster_size, bytes);
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    *pnum = offset + num == s->len ? num : ALIGN_DOWN(num, s->cluster_size);
    return ret;
}

/*
 * Copy offload.  Like QEMU, any failure (not only -ENOTSUP) turns it off
 * for good: the task then reads and writes, and a real I/O error shows
 * there, with the side it came from.
 */
static bool coroutine_fn block_copy_task_offload(BlockCopyTask *task)
{
    BlockCopyState *s = task->s;
    int ret = bdrv_co_copy_range(s->source, task->req.offset, s->target,
                                 task->req.offset, task->req.bytes,
                                 s->write_flags);

    if (ret < 0) {
        trace_block_copy_copy_range_fail(s, task->req.offset, ret);
        s->use_copy_range = false;
    }
    return ret == 0;
}

/*
 * Copy through a bounce buffer from the shared budget.  With write-behind
 * the target write may finish after the call went on: from the buffer,
 * or, if the task spilled, from the spill file once the buffer is back.
 */
static int coroutine_fn block_copy_task_copy(BlockCopyTask *task,
                                             bool *error_is_read)
{
    BlockCopyState *s = task->s;
    int64_t offset = task->req.offset;
    int64_t bytes = task->req.bytes;
    void *buf;
    int ret;

    if (s->use_copy_range && block_copy_task_offload(task)) {
        *error_is_read = false;
        return 0;
    }
    buf = block_copy_bounce_get(s, bytes);
    if (!buf) {
        *error_is_read = true;
        ret = -ENOMEM;
    } else {
        ret = bdrv_co_pread(s->source, offset, bytes, buf, 0);
        *error_is_read = ret < 0;
        if (ret == 0) {
            block_copy_task_try_behind(task, buf);
            if (!task->spilled) {
                ret = bdrv_co_pwrite(s->target, offset, bytes, buf,
                                     s->write_flags);
            }
        }
    }
    block_copy_bounce_put(s, buf, bytes);
    if (task->spilled) {
        ret = block_copy_behind_write_spilled(task);
    }
    return ret;
}

static int coroutine_fn block_copy_task_run(BlockCopyTask *task,
                                            bool *error_is_read)
{
    BlockCopyState *s = task->s;
    int ret;

    trace_block_copy_task_start(task->call, task->req.offset,
                                task->req.bytes, task->zeroes);
    if (task->zeroes) {
        /*
         * No MAY_UNMAP: a target with a backing file must read zeroes
         * there, not the backing file's data.
         */
        *error_is_read = false;
        ret = bdrv_co_pwrite_zeroes(s->target, task->req.offset,
                                    task->req.bytes,
                                    s->write_flags &
                                    ~BDRV_REQ_WRITE_COMPRESSED);
    } else {
        ret = block_copy_task_copy(task, error_is_read);
    }
    if (ret == 0 && s->discard_source) {
        /* Advisory: a failed discard leaves a correct copy behind. */
        bdrv_co_pdiscard(s->source, task->req.offset, task->req.bytes);
    }
    return ret;
}

static void coroutine_fn block_copy_task_entry(void *opaque)
{
    BlockCopyTask *task = opaque;
    BlockCopyCallState *call = task->call;
    bool error_is_read = false;
    int ret = block_copy_task_run(task, &error_is_read);

    if (!task->call) {
        /* The call went on without us. */
        block_copy_behind_end(task, ret);
        g_free(task);
        return;
    }
    if (ret < 0 && call->ret == 0) {
        call->ret = ret;
        call->error_is_read = error_is_read;
    }
    block_copy_task_end(task, ret);
    g_free(task);
    call->tasks_in_flight--;
    co_queue_next(&call->task_ended);
}

/* --- calls --- */

/* May the call start another task? */
static bool block_copy_call_may_start(BlockCopyCallState *call)
{
    return !call->cancelled && call->ret == 0;
}

static gboolean block_copy_sleep_timer_cb(gpointer opaque)
{
    BlockCopyCallState *call = opaque;

    call->sleep_timer = 0;
    coroutine_wake(call->co);
    return G_SOURCE_REMOVE;
}

/* Sleep @ns, or until block_copy_kick(). */
static void coroutine_fn block_copy_call_sleep(BlockCopyCallState *call,
                                               int64_t ns)
{
    g_assert(call->co == coroutine_self());
    call->sleep_timer = g_timeout_add(DIV_ROUND_UP(ns, 1000000),
                                      block_copy_sleep_timer_cb, call);
    coroutine_yield();
}

/*
 * May the background call start @task now?  Parallel tasks are charged
 * before they start, so that they are spaced out.  If not, the task
 * gives its clusters back (the call sleeps without holding a range, so
 * guest writes never wait for the limit) and the call sleeps; false.
 *
 * Copies before guest writes never wait, but they are charged too, as
 * in QEMU: the speed limits all that the backup moves, so while the
 * guest writes much, the background copy gives the disk to the guest.
 */
static bool coroutine_fn block_copy_task_ratelimit(BlockCopyTask *task)
{
    BlockCopyCallState *call = task->call;
    int64_t delay;

    if (call->ignore_ratelimit) {
        ratelimit_charge(&call->s->rate_limit, task->req.bytes,
                         clock_now_ns());
        return true;
    }
    delay = ratelimit_calculate_delay(&call->s->rate_limit, task->req.bytes,
                                      clock_now_ns());
    if (delay == 0) {
        return true;
    }
    block_copy_task_end(task, -EAGAIN);
    g_free(task);
    block_copy_call_sleep(call, delay);
    return false;
}

/*
 * Start tasks for the dirty runs of the call's range, at most
 * max_workers at a time, and wait until they have all ended.
 */
static void coroutine_fn block_copy_dirty_clusters(BlockCopyCallState *call)
{
    BlockCopyState *s = call->s;
    int64_t offset = call->offset;
    int64_t end = call->offset + call->bytes;

    while (offset < end) {
        BlockCopyTask *task;
        int64_t status_bytes;
        int status;

        while (call->tasks_in_flight >= call->max_workers) {
            co_queue_wait(&call->task_ended);
        }
        if (!block_copy_call_may_start(call)) {
            break;
        }
        task = block_copy_task_create(call, offset, end);
        if (!task) {
            break;
        }
        status = block_copy_block_status(s, task->req.offset,
                                         task->req.bytes, &status_bytes);
        block_copy_task_shrink(task, status_bytes);
        if (s->skip_unallocated && !(status & BDRV_BLOCK_ALLOCATED)) {
            /* sync=top: the backing file has it, not ours to copy. */
            trace_block_copy_task_skip(call, task->req.offset,
                                       task->req.bytes);
            offset = task->req.offset + task->req.bytes;
            block_copy_task_end(task, 0);
            g_free(task);
            continue;
        }
        if (!block_copy_task_ratelimit(task)) {
            continue;       /* the same clusters again, after the sleep */
        }
        offset = task->req.offset + task->req.bytes;
        task->zeroes = status & BDRV_BLOCK_ZERO;
        call->tasks_in_flight++;
        coroutine_enter(coroutine_create(block_copy_task_entry, task));
    }
    while (call->tasks_in_flight > 0) {
        co_queue_wait(&call->task_ended);
    }
}

static bool block_copy_range_dirty(BlockCopyState *s, int64_t offset,
                                   int64_t bytes)
{
    return hbitmap_next_dirty(bdrv_dirty_bitmap_bits(s->copy_bitmap),
                              offset, bytes) >= 0;
}

/*
 * Run @call to its end: until its range is clean and nothing in flight
 * overlaps it, or a task failed, or it was cancelled.
 */
static void coroutine_fn block_copy_call_run(BlockCopyCallState *call)
{
    BlockCopyState *s = call->s;

    trace_block_copy_call_start(s, call, call->offset, call->bytes,
                                !call->ignore_ratelimit);
    g_queue_push_tail_link(&s->calls, &call->link);
    while (block_copy_call_may_start(call)) {
        if (block_copy_range_dirty(s, call->offset, call->bytes)) {
            block_copy_dirty_clusters(call);
        } else if (!reqlist_wait_one(&s->reqs, call->offset, call->bytes) &&
                   (call->write_behind ||
                    !reqlist_wait_one(&s->behind_reqs, call->offset,
                                      call->bytes))) {
            break;
        }
        /* A task we waited for may have failed and re-dirtied bits. */
    }
    g_queue_unlink(&s->calls, &call->link);
    if (g_queue_is_empty(&s->calls)) {
        block_copy_free_spare_buffers(s);
    }
    call->finished = true;
    trace_block_copy_call_end(call, call->ret, call->cancelled);
    /* block_copy_state_free() may be waiting for the last call. */
    bdrv_wake_drainers();
}

static BlockCopyCallState *block_copy_call_new(BlockCopyState *s,
                                               int64_t offset, int64_t bytes,
                                               int max_workers,
                                               int64_t max_chunk,
                                               bool ignore_ratelimit)
{
    BlockCopyCallState *call = g_new0(BlockCopyCallState, 1);
    int64_t end;

    /* Whole clusters, within the source. */
    offset = MIN(MAX(offset, 0), s->len);
    end = MIN(ALIGN_UP(offset + MAX(bytes, 0), s->cluster_size), s->len);
    g_assert(max_workers > 0);
    call->s = s;
    call->offset = ALIGN_DOWN(offset, s->cluster_size);
    call->bytes = MAX(end - call->offset, 0);
    call->max_workers = max_workers;
    call->max_task_bytes = s->chunk_size;
    if (max_chunk > 0) {
        call->max_task_bytes = MIN(call->max_task_bytes,
                                   MAX(ALIGN_DOWN(max_chunk,
                                                  s->cluster_size),
                                       s->cluster_size));
    }
    call->ignore_ratelimit = ignore_ratelimit;
    /* Background calls gain nothing from returning before the write. */
    call->write_behind = ignore_ratelimit && s->write_behind;
    call->link.data = call;
    co_queue_init(&call->task_ended);
    return call;
}

/* --- synchronous calls --- */

/* The call outlived its timeout: nobody waits for it but the drains. */
static void block_copy_call_abandon(BlockCopyCallState *call)
{
    call->abandoned = true;
    block_copy_owner_inc_in_flight(call->s);
}

static gboolean block_copy_timeout_cb(gpointer opaque)
{
    BlockCopyCallState *call = opaque;

    call->timeout_timer = 0;
    trace_block_copy_call_timeout(call);
    block_copy_call_abandon(call);
    coroutine_wake(g_steal_pointer(&call->waiter));
    return G_SOURCE_REMOVE;
}

static void coroutine_fn block_copy_timed_call_entry(void *opaque)
{
    BlockCopyCallState *call = opaque;
    BlockCopyState *s = call->s;

    block_copy_call_run(call);
    if (call->abandoned) {
        g_free(call);
        block_copy_owner_dec_in_flight(s);
        return;
    }
    g_source_remove(call->timeout_timer);
    call->timeout_timer = 0;
    coroutine_wake(g_steal_pointer(&call->waiter));
}

int coroutine_fn block_copy(BlockCopyState *s, int64_t offset,
                            int64_t bytes, uint64_t timeout_ns,
                            bool *error_is_read)
{
    BlockCopyCallState *call = block_copy_call_new(s, offset, bytes,
                                                   BLOCK_COPY_MAX_WORKERS, 0,
                                                   true);
    int ret;

    if (timeout_ns == 0) {
        call->co = coroutine_self();
        block_copy_call_run(call);
    } else {
        /*
         * The copy runs in its own coroutine so that we can stop waiting
         * for it.  Exactly one of its end and the timer wakes us.
         */
        call->waiter = coroutine_self();
        call->timeout_timer = g_timeout_add(DIV_ROUND_UP(timeout_ns,
                                                         1000000),
                                            block_copy_timeout_cb, call);
        call->co = coroutine_create(block_copy_timed_call_entry, call);
        coroutine_enter(call->co);
        coroutine_yield();
        if (call->abandoned) {
            /* The call frees itself when it ends. */
            if (error_is_read) {
                *error_is_read = false;
            }
            return -ETIMEDOUT;
        }
    }
    ret = block_copy_call_status(call, error_is_read);
    g_free(call);
    return ret;
}

/* --- asynchronous calls --- */

static void coroutine_fn block_copy_async_entry(void *opaque)
{
    BlockCopyCallState *call = opaque;

    block_copy_call_run(call);
    /* The last use of @call: the callback may free it. */
    if (call->cb) {
        call->cb(call->opaque);
    }
}

BlockCopyCallState *block_copy_async(BlockCopyState *s, int64_t offset,
                                     int64_t bytes, int max_workers,
                                     int64_t max_chunk,
                                     BlockCopyAsyncCallbackFunc *cb,
                                     void *opaque)
{
    BlockCopyCallState *call = block_copy_call_new(s, offset, bytes,
                                                   max_workers, max_chunk,
                                                   false);

    call->cb = cb;
    call->opaque = opaque;
    call->co = coroutine_create(block_copy_async_entry, call);
    /* From the main loop: the callback never runs before we return. */
    coroutine_wake(call->co);
    return call;
}

void block_copy_call_free(BlockCopyCallState *call)
{
    if (!call) {
        return;
    }
    g_assert(call->finished);
    g_free(call);
}

bool block_copy_call_finished(BlockCopyCallState *call)
{
    return call->finished;
}

bool block_copy_call_succeeded(BlockCopyCallState *call)
{
    return call->finished && !call->cancelled && call->ret == 0;
}

bool block_copy_call_failed(BlockCopyCallState *call)
{
    return call->finished && !call->cancelled && call->ret < 0;
}

bool block_copy_call_cancelled(BlockCopyCallState *call)
{
    return call->finished && call->cancelled;
}

int block_copy_call_status(BlockCopyCallState *call, bool *error_is_read)
{
    g_assert(call->finished);
    if (error_is_read) {
        *error_is_read = call->error_is_read;
    }
    return call->ret;
}

void block_copy_call_cancel(BlockCopyCallState *call)
{
    call->cancelled = true;
    block_copy_kick(call);
}

void block_copy_kick(BlockCopyCallState *call)
{
    if (call->sleep_timer) {
        g_source_remove(call->sleep_timer);
        call->sleep_timer = 0;
        coroutine_wake(call->co);
    }
}

/* --- sync=top --- */

/*
 * Is the cluster at @offset allocated in the source's own layer?  Looks
 * at whole clusters: *@count gets the length of the run of clusters
 * that answer alike (a cluster allocated in part counts as allocated).
 */
static int coroutine_fn block_copy_is_cluster_allocated(BlockCopyState *s,
                                                        int64_t offset,
                                                        int64_t *count)
{
    int64_t bytes = s->len - offset;
    int64_t done = 0;

    g_assert(IS_ALIGNED(offset, s->cluster_size));
    for (;;) {
        int64_t pnum;
        int depth;
        int ret = bdrv_co_block_status(s->source->bs, offset + done,
                                       bytes - done, &pnum, &depth);

        if (ret < 0) {
            return ret;
        }
        if (ret & BDRV_BLOCK_ALLOCATED) {
            /* Within the first cluster: the whole cluster counts. */
            *count = MIN(ALIGN_UP(done + pnum, s->cluster_size), bytes);
            return 1;
        }
        done += pnum;
        if (done >= bytes) {
            *count = bytes;
            return 0;
        }
        if (done >= s->cluster_size) {
            /* Whole unallocated clusters; a partial one is decided later. */
            *count = ALIGN_DOWN(done, s->cluster_size);
            return 0;
        }
    }
}

int coroutine_fn block_copy_reset_unallocated(BlockCopyState *s,
                                              int64_t offset,
                                              int64_t *count)
{
    int ret = block_copy_is_cluster_allocated(s, offset, count);

    if (ret == 0) {
        bdrv_reset_dirty_bitmap(s->copy_bitmap, offset, *count);
    }
    return ret;
}
