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

/*
 * The old data is in memory: if the call allows it and the budget has
 * room, let the call go on without this task (it returns to the guest)
 * while the target write finishes behind it.
 */
void block_copy_task_try_behind(BlockCopyTask *task, int64_t mem)
{
    BlockCopyState *s = task->s;
    BlockCopyCallState *call = task->call;

    if (!call->write_behind || s->behind_free < mem) {
        return;
    }
    trace_block_copy_task_behind(call, task->req.offset, task->req.bytes);
    s->behind_free -= mem;
    task->behind_bytes = mem;
    /* Sync calls stop waiting for it; its waiters look again. */
    reqlist_remove(&s->reqs, &task->req);
    reqlist_add(&s->behind_reqs, &task->req, task->req.offset,
                task->req.bytes);
    block_copy_owner_inc_in_flight(s);
    task->call = NULL;
    call->tasks_in_flight--;
    co_queue_next(&call->task_ended);
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
    s->behind_free += task->behind_bytes;
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
