/*
 * The QMP transaction command: several actions at one point in time,
 * all or nothing, in QEMU's order.
 *
 * All nodes are drained for the whole transaction, so no guest write
 * lands between two actions.  Each action is prepared in list order and
 * makes its change there (so later actions see it); the first failure
 * stops the preparation, and the prepared actions are aborted in reverse
 * order, which undoes their changes.  Otherwise they are committed in
 * reverse order.  Last, every prepared action is cleaned up, again in
 * reverse order.
 *
 * A backup action creates its job at prepare and starts it at commit; an
 * aborted transaction cancels the created job, which never ran.  With
 * completion-mode grouped the jobs share one job transaction: they
 * finalize together, and if one fails the others are cancelled.  QEMU
 * refuses grouped for every other action but abort; blockd accepts the
 * dirty-bitmap actions too, since they complete at once, so that a new
 * checkpoint and its backup can be one grouped transaction.
 */
#include "block/backup-qmp.h"
#include "block/bitmap-qmp.h"
#include "block/block_int.h"
#include "block/blockjob.h"
#include "qapi/qapi-commands.h"

typedef struct TransactionState TransactionState;

typedef struct TransactionActionOps {
    /* Make the change; on failure, change nothing. */
    void coroutine_fn (*prepare)(TransactionState *state, Error **errp);
    void (*commit)(TransactionState *state);
    void (*abort)(TransactionState *state);
    /* Runs after commit or abort: release what prepare kept. */
    void (*clean)(TransactionState *state);
} TransactionActionOps;

struct TransactionState {
    TransactionAction *action;
    const TransactionActionOps *ops;
    JobTxn *txn;                    /* grouped: shared by the jobs */
    BlockJob *job;                  /* the job a backup action created */
    BdrvDirtyBitmap *bitmap;        /* the bitmap the action changed */
    HBitmap *backup;                /* its bits before (clear, merge) */
    bool was_enabled;               /* its state before (enable, disable) */
};

/* --- abort --- */

static void coroutine_fn abort_prepare(TransactionState *state, Error **errp)
{
    error_setg(errp, "Transaction aborted using Abort action");
}

static const TransactionActionOps abort_ops = {
    .prepare = abort_prepare,
};

/* --- block-dirty-bitmap-add --- */

static void coroutine_fn bitmap_add_prepare(TransactionState *state,
                                            Error **errp)
{
    state->bitmap =
        block_dirty_bitmap_add(state->action->u.block_dirty_bitmap_add.data,
                               errp);
}

/* A crash-safe bitmap was stored at prepare: delete the stored copy. */
static void coroutine_fn bitmap_add_unstore(void *opaque)
{
    BdrvDirtyBitmap *bitmap = opaque;
    Error *local_err = NULL;

    if (!bdrv_co_remove_persistent_dirty_bitmap(bdrv_dirty_bitmap_bs(bitmap),
                                                bdrv_dirty_bitmap_name(bitmap),
                                                &local_err)) {
        warn_report("%s", error_get_pretty(local_err));
        error_free(local_err);
    }
}

static void bitmap_add_abort(TransactionState *state)
{
    if (state->action->u.block_dirty_bitmap_add.data->__org_blockd_crash_safe) {
        co_run_sync(bitmap_add_unstore, state->bitmap);
    }
    bdrv_release_dirty_bitmap(state->bitmap);
}

static const TransactionActionOps bitmap_add_ops = {
    .prepare = bitmap_add_prepare,
    .abort = bitmap_add_abort,
};

/* --- block-dirty-bitmap-remove --- */

/*
 * The stored copy goes at prepare; the bitmap stays, busy, until commit
 * releases it.  Aborted, it is usable again and stored at the next close.
 */
static void coroutine_fn bitmap_remove_prepare(TransactionState *state,
                                               Error **errp)
{
    BlockDirtyBitmap *args = state->action->u.block_dirty_bitmap_remove.data;

    state->bitmap = block_dirty_bitmap_remove(args->node, args->name, false,
                                              errp);
    if (state->bitmap) {
        bdrv_dirty_bitmap_skip_store(state->bitmap, true);
        bdrv_dirty_bitmap_set_busy(state->bitmap, true);
    }
}

static void bitmap_remove_commit(TransactionState *state)
{
    bdrv_release_dirty_bitmap(state->bitmap);
}

static void bitmap_remove_abort(TransactionState *state)
{
    bdrv_dirty_bitmap_set_busy(state->bitmap, false);
    bdrv_dirty_bitmap_skip_store(state->bitmap, false);
}

static const TransactionActionOps bitmap_remove_ops = {
    .prepare = bitmap_remove_prepare,
    .commit = bitmap_remove_commit,
    .abort = bitmap_remove_abort,
};

/* --- block-dirty-bitmap-clear and -merge: the old bits are kept --- */

static void coroutine_fn bitmap_clear_prepare(TransactionState *state,
                                              Error **errp)
{
    BlockDirtyBitmap *args = state->action->u.block_dirty_bitmap_clear.data;

    state->bitmap = block_dirty_bitmap_lookup_checked(args->node, args->name,
                                                      BDRV_BITMAP_DEFAULT,
                                                      errp);
    if (state->bitmap) {
        bdrv_clear_dirty_bitmap(state->bitmap, &state->backup);
    }
}

static void coroutine_fn bitmap_merge_prepare(TransactionState *state,
                                              Error **errp)
{
    BlockDirtyBitmapMerge *args =
        state->action->u.block_dirty_bitmap_merge.data;

    state->bitmap = block_dirty_bitmap_merge(args->node, args->target,
                                             args->bitmaps, &state->backup,
                                             errp);
}

static void bitmap_restore_backup(TransactionState *state)
{
    bdrv_restore_dirty_bitmap(state->bitmap, g_steal_pointer(&state->backup));
}

static void bitmap_free_backup(TransactionState *state)
{
    hbitmap_free(g_steal_pointer(&state->backup));
}

static const TransactionActionOps bitmap_clear_ops = {
    .prepare = bitmap_clear_prepare,
    .abort = bitmap_restore_backup,
    .clean = bitmap_free_backup,
};

static const TransactionActionOps bitmap_merge_ops = {
    .prepare = bitmap_merge_prepare,
    .abort = bitmap_restore_backup,
    .clean = bitmap_free_backup,
};

/* --- block-dirty-bitmap-enable and -disable --- */

static void coroutine_fn bitmap_set_enabled(TransactionState *state,
                                            BlockDirtyBitmap *args,
                                            bool enable, Error **errp)
{
    state->bitmap = block_dirty_bitmap_lookup_checked(args->node, args->name,
                                                      BDRV_BITMAP_ALLOW_RO,
                                                      errp);
    if (!state->bitmap) {
        return;
    }
    state->was_enabled = bdrv_dirty_bitmap_enabled(state->bitmap);
    if (enable) {
        bdrv_enable_dirty_bitmap(state->bitmap);
    } else {
        bdrv_disable_dirty_bitmap(state->bitmap);
    }
}

static void coroutine_fn bitmap_enable_prepare(TransactionState *state,
                                               Error **errp)
{
    bitmap_set_enabled(state, state->action->u.block_dirty_bitmap_enable.data,
                       true, errp);
}

static void coroutine_fn bitmap_disable_prepare(TransactionState *state,
                                                Error **errp)
{
    bitmap_set_enabled(state, state->action->u.block_dirty_bitmap_disable.data,
                       false, errp);
}

static void bitmap_enabled_abort(TransactionState *state)
{
    if (state->was_enabled) {
        bdrv_enable_dirty_bitmap(state->bitmap);
    } else {
        bdrv_disable_dirty_bitmap(state->bitmap);
    }
}

static const TransactionActionOps bitmap_enable_ops = {
    .prepare = bitmap_enable_prepare,
    .abort = bitmap_enabled_abort,
};

static const TransactionActionOps bitmap_disable_ops = {
    .prepare = bitmap_disable_prepare,
    .abort = bitmap_enabled_abort,
};

/* --- blockdev-backup and drive-backup --- */

static void coroutine_fn blockdev_backup_action_prepare(TransactionState *state,
                                                        Error **errp)
{
    state->job = blockdev_backup_prepare(
        state->action->u.blockdev_backup.data, state->txn, errp);
}

static void coroutine_fn drive_backup_action_prepare(TransactionState *state,
                                                     Error **errp)
{
    state->job = drive_backup_prepare(state->action->u.drive_backup.data,
                                      state->txn, errp);
}

static void backup_action_commit(TransactionState *state)
{
    job_start(&state->job->job);
}

/*
 * The job never ran: a cancel finalizes it at once, through abort and
 * clean (job_cancel_sync() would do the same but may not run here, in
 * the command's coroutine).
 */
static void backup_action_abort(TransactionState *state)
{
    job_cancel(&state->job->job, true);
}

static const TransactionActionOps blockdev_backup_ops = {
    .prepare = blockdev_backup_action_prepare,
    .commit = backup_action_commit,
    .abort = backup_action_abort,
};

static const TransactionActionOps drive_backup_ops = {
    .prepare = drive_backup_action_prepare,
    .commit = backup_action_commit,
    .abort = backup_action_abort,
};

static const TransactionActionOps *const action_ops[] = {
    [TRANSACTION_ACTION_KIND_ABORT] = &abort_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD] = &bitmap_add_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE] = &bitmap_remove_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_CLEAR] = &bitmap_clear_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE] = &bitmap_enable_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_DISABLE] = &bitmap_disable_ops,
    [TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_MERGE] = &bitmap_merge_ops,
    [TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP] = &blockdev_backup_ops,
    [TRANSACTION_ACTION_KIND_DRIVE_BACKUP] = &drive_backup_ops,
};

/* Every node, referenced and drained, for the whole transaction. */
static GPtrArray *drain_all_nodes(void)
{
    GPtrArray *nodes = g_ptr_array_new();

    for (GList *l = bdrv_all_nodes(); l; l = l->next) {
        bdrv_ref(l->data);
        g_ptr_array_add(nodes, l->data);
    }
    bdrv_drained_begin_nodes((BlockDriverState *const *)nodes->pdata,
                             nodes->len);
    return nodes;
}

static void undrain_nodes(GPtrArray *nodes)
{
    bdrv_drained_end_nodes((BlockDriverState *const *)nodes->pdata,
                           nodes->len);
    for (guint i = 0; i < nodes->len; i++) {
        bdrv_unref(nodes->pdata[i]);
    }
    g_ptr_array_free(nodes, true);
}

void coroutine_fn qmp_transaction(TransactionActionList *actions,
                                  TransactionProperties *properties,
                                  Error **errp)
{
    ActionCompletionMode mode = properties && properties->has_completion_mode
                                ? properties->completion_mode
                                : ACTION_COMPLETION_MODE_INDIVIDUAL;
    JobTxn *txn = mode == ACTION_COMPLETION_MODE_GROUPED ? job_txn_new()
                                                         : NULL;
    GPtrArray *nodes = drain_all_nodes();
    GList *prepared = NULL;         /* TransactionState *, newest first */
    Error *local_err = NULL;

    for (TransactionActionList *l = actions; l; l = l->next) {
        TransactionState *state = g_new0(TransactionState, 1);

        state->action = l->value;
        state->ops = action_ops[l->value->type];
        state->txn = txn;
        state->ops->prepare(state, &local_err);
        if (local_err) {
            g_free(state);
            break;
        }
        prepared = g_list_prepend(prepared, state);
    }
    for (GList *l = prepared; l; l = l->next) {
        TransactionState *state = l->data;
        void (*finish)(TransactionState *) = local_err ? state->ops->abort
                                                       : state->ops->commit;

        if (finish) {
            finish(state);
        }
    }
    for (GList *l = prepared; l; l = l->next) {
        TransactionState *state = l->data;

        if (state->ops->clean) {
            state->ops->clean(state);
        }
    }
    g_list_free_full(prepared, g_free);
    undrain_nodes(nodes);
    job_txn_unref(txn);
    error_propagate(errp, local_err);
}
