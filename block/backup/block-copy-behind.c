/*
 * block-copy write-behind, a blockd extension for synchronous calls
 * (BlockCopyOptions.write_behind_bytes; docs/devel/block-copy.rst).
 *
 * Once a task of a block_copy() has read the old data, it may leave its
 * call and move from s->reqs to s->behind_reqs, holding its buffer until
 * the target write is done.  block_copy() then returns without waiting
 * for the write, and the guest write it protects goes on: the old data
 * is safe in memory.  Synchronous calls wait only for s->reqs;
 * background calls and block_copy_state_free() wait for both lists, and
 * snapshot readers of the target for s->behind_reqs
 * (block_copy_wait_behind_writes()).  A failed write behind cannot be
 * retried, the source changed: the state is failed for good and its
 * failure callback tells the owner.
 *
 * The memory of tasks behind is bounded (s->behind_free).  When it is
 * taken, a task may park its old data in the spill file instead
 * (write_behind_spill_bytes, block-copy-spill.c) and free its buffer:
 * it is behind as well.  Its target write then reads the data back a
 * piece at a time, each piece in write-behind memory again, so that the
 * bound holds for everything behind.  Spilled tasks waiting for that
 * memory go first: a new task does not take it from them (it spills
 * too, or waits), so the spill drains.  A spill that cannot take the
 * data (full, or its write failed) changes nothing: the task stays in
 * its call and writes the target from its buffer, as without a spill.
 */
#include "block/backup/block-copy-int.h"
#include "block/backup/trace.h"

void block_copy_set_failure_callback(BlockCopyState *s,
                                     BlockCopyFailureFunc *cb,
                                     void *opaque)
{
    s->failure_cb = cb;
    s->failure_opaque = opaque;
}

bool block_copy_state_failed(BlockCopyState *s)
{
    return s->behind_ret < 0;
}

void coroutine_fn block_copy_wait_behind_writes(BlockCopyState *s,
                                                int64_t offset,
                                                int64_t bytes)
{
    reqlist_wait_all(&s->behind_reqs, offset, bytes);
}

/* Leave the call: it goes on, the target write finishes behind it. */
static void block_copy_task_leave_call(BlockCopyTask *task)
{
    BlockCopyState *s = task->s;
    BlockCopyCallState *call = task->call;

    trace_block_copy_task_behind(call, task->req.offset, task->req.bytes,
                                 task->spilled);
    /* Sync calls stop waiting for it; its waiters look again. */
    reqlist_remove(&s->reqs, &task->req);
    reqlist_add(&s->behind_reqs, &task->req, task->req.offset,
                task->req.bytes);
    block_copy_owner_inc_in_flight(s);
    task->call = NULL;
    call->tasks_in_flight--;
    co_queue_next(&call->task_ended);
}

/* Write-behind memory for reading back spilled data (waits for it). */
static void coroutine_fn block_copy_behind_mem_get(BlockCopyState *s,
                                                   int64_t bytes)
{
    s->behind_mem_waiting++;
    while (s->behind_free < bytes) {
        co_queue_wait(&s->behind_mem_waiters);
    }
    s->behind_mem_waiting--;
    s->behind_free -= bytes;
}

static void block_copy_behind_mem_put(BlockCopyState *s, int64_t bytes)
{
    s->behind_free += bytes;
    /* Waiters want different amounts: each looks for itself. */
    co_queue_restart_all(&s->behind_mem_waiters);
}

/*
 * Park the task's old data in the spill file.  False if the spill has no
 * room or the write failed: then the task still holds the data in @buf.
 */
static bool coroutine_fn block_copy_task_spill(BlockCopyTask *task,
                                               void *buf)
{
    BlockCopyState *s = task->s;
    int64_t offset = block_copy_spill_alloc(s->spill, task->req.bytes);
    int ret;

    if (offset < 0) {
        return false;
    }
    ret = block_copy_spill_pwrite(s->spill, offset, buf, task->req.bytes);
    if (ret < 0) {
        trace_block_copy_spill_write_failed(task->req.offset,
                                            task->req.bytes, ret);
        block_copy_spill_release(s->spill, offset, task->req.bytes);
        return false;
    }
    task->spilled = true;
    task->spill_offset = offset;
    return true;
}

void coroutine_fn block_copy_task_try_behind(BlockCopyTask *task, void *buf)
{
    BlockCopyState *s = task->s;
    int64_t mem = block_copy_mem_cost(task->req.bytes);

    if (!task->call->write_behind) {
        return;
    }
    if (s->behind_free >= mem && s->behind_mem_waiting == 0) {
        s->behind_free -= mem;
        task->behind_bytes = mem;
        block_copy_task_leave_call(task);
    } else if (s->spill && block_copy_task_spill(task, buf)) {
        block_copy_task_leave_call(task);
    }
}

int coroutine_fn block_copy_behind_write_spilled(BlockCopyTask *task)
{
    BlockCopyState *s = task->s;
    int64_t bytes = task->req.bytes;
    int64_t piece;
    int ret = 0;

    g_assert(task->spilled && !task->call);
    for (int64_t done = 0; ret == 0 && done < bytes; done += piece) {
        void *buf;

        piece = MIN(s->spill_piece, bytes - done);
        block_copy_behind_mem_get(s, piece);
        buf = block_copy_bounce_get(s, piece);
        ret = buf ? block_copy_spill_pread(s->spill,
                                           task->spill_offset + done, buf,
                                           piece)
                  : -ENOMEM;
        if (ret == 0) {
            ret = bdrv_co_pwrite(s->target, task->req.offset + done, piece,
                                 buf, s->write_flags);
        }
        block_copy_bounce_put(s, buf, piece);
        block_copy_behind_mem_put(s, piece);
    }
    block_copy_spill_release(s->spill, task->spill_offset, bytes);
    task->spilled = false;
    return ret;
}

/*
 * A write behind ended.  Its clusters were reported copied: a failure
 * cannot be retried (the source has new data there), so it fails the
 * whole state.
 */
void block_copy_behind_end(BlockCopyTask *task, int ret)
{
    BlockCopyState *s = task->s;

    trace_block_copy_behind_end(task->req.offset, task->req.bytes, ret);
    block_copy_behind_mem_put(s, task->behind_bytes);
    s->in_flight_bytes -= task->req.bytes;
    if (ret == 0 && s->progress_cb) {
        s->progress_cb(s->progress_opaque, task->req.bytes);
    }
    reqlist_remove(&s->behind_reqs, &task->req);
    if (ret < 0 && s->behind_ret == 0) {
        s->behind_ret = ret;
        if (s->failure_cb) {
            s->failure_cb(s->failure_opaque, ret);
        }
    }
    block_copy_owner_dec_in_flight(s);
}
