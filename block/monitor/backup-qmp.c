/*
 * The QMP commands blockdev-backup and drive-backup, and the preparation
 * half of their transaction actions (transaction.c).
 *
 * As in QEMU, each command is a transaction of one action, so it drains
 * every node while the job is set up.  The arguments are checked in
 * QEMU 7.2's order with its messages (docs/interop/backup.rst lists
 * them): first the sync mode / bitmap / bitmap-mode matrix, then the
 * checks QEMU makes when it creates the job (same node, compression,
 * busy nodes, x-perf ranges), and last those of backup_job_create().
 */
#include "block/backup-qmp.h"
#include "block/backup.h"
#include "block/block_int.h"
#include "block/block-copy.h"
#include "qapi/qapi-commands.h"

/* The sync / bitmap / bitmap-mode matrix, in QEMU's order. */
static bool backup_check_sync_bitmap(BackupCommon *args,
                                     BlockDriverState *bs,
                                     BackupJobOptions *opts, Error **errp)
{
    BlockDriverState *bitmap_bs = bs;

    opts->sync = args->sync;
    if ((args->sync == MIRROR_SYNC_MODE_BITMAP ||
         args->sync == MIRROR_SYNC_MODE_INCREMENTAL) && !args->bitmap) {
        error_setg(errp, "must provide a valid bitmap name for '%s' "
                   "sync mode", MirrorSyncMode_str(args->sync));
        return false;
    }
    if (args->sync == MIRROR_SYNC_MODE_INCREMENTAL) {
        if (args->has_bitmap_mode &&
            args->bitmap_mode != BITMAP_SYNC_MODE_ON_SUCCESS) {
            error_setg(errp, "Bitmap sync mode must be '%s' when using sync "
                       "mode '%s'",
                       BitmapSyncMode_str(BITMAP_SYNC_MODE_ON_SUCCESS),
                       MirrorSyncMode_str(args->sync));
            return false;
        }
        args->has_bitmap_mode = true;
        args->bitmap_mode = BITMAP_SYNC_MODE_ON_SUCCESS;
        opts->sync = MIRROR_SYNC_MODE_BITMAP;
    }
    if (args->__org_blockd_bitmap_node) {
        if (!args->bitmap) {
            error_setg(errp, "Cannot specify a bitmap node without a "
                       "bitmap");
            return false;
        }
        bitmap_bs = bdrv_lookup_bs(args->__org_blockd_bitmap_node,
                                   args->__org_blockd_bitmap_node, errp);
        if (!bitmap_bs) {
            return false;
        }
    }
    if (args->bitmap) {
        opts->sync_bitmap = bdrv_find_dirty_bitmap(bitmap_bs, args->bitmap);
        if (!opts->sync_bitmap) {
            error_setg(errp, "Bitmap '%s' could not be found", args->bitmap);
            return false;
        }
        if (!args->has_bitmap_mode) {
            error_setg(errp, "Bitmap sync mode must be given when providing "
                       "a bitmap");
            return false;
        }
        if (!bdrv_dirty_bitmap_check(opts->sync_bitmap, BDRV_BITMAP_ALLOW_RO,
                                     errp)) {
            return false;
        }
        if (args->sync == MIRROR_SYNC_MODE_NONE) {
            error_setg(errp, "sync mode '%s' does not produce meaningful "
                       "bitmap outputs", MirrorSyncMode_str(args->sync));
            return false;
        }
        if (args->bitmap_mode == BITMAP_SYNC_MODE_NEVER &&
            opts->sync != MIRROR_SYNC_MODE_BITMAP) {
            error_setg(errp, "Bitmap sync mode '%s' has no meaningful effect "
                       "when combined with sync mode '%s'",
                       BitmapSyncMode_str(args->bitmap_mode),
                       MirrorSyncMode_str(args->sync));
            return false;
        }
        opts->bitmap_mode = args->bitmap_mode;
    }
    if (!args->bitmap && args->has_bitmap_mode) {
        error_setg(errp, "Cannot specify bitmap sync mode without a bitmap");
        return false;
    }
    return true;
}

/* x-perf, with QEMU's ranges and defaults. */
static bool backup_check_perf(BackupPerf *perf, BackupJobOptions *opts,
                              Error **errp)
{
    int64_t max_workers = BLOCK_COPY_MAX_WORKERS;

    opts->max_chunk = 0;
    if (perf) {
        opts->use_copy_range = perf->has_use_copy_range &&
                               perf->use_copy_range;
        if (perf->has_max_workers) {
            max_workers = perf->max_workers;
        }
        opts->max_chunk = perf->has_max_chunk ? perf->max_chunk : 0;
        opts->min_cluster_size = perf->has_min_cluster_size
                                 ? perf->min_cluster_size : 0;
    }
    if (max_workers < 1 || max_workers > INT_MAX) {
        error_setg(errp, "max-workers must be between 1 and %d", INT_MAX);
        return false;
    }
    if (opts->max_chunk < 0) {
        error_setg(errp, "max-chunk must be zero (which means no limit) or "
                   "positive");
        return false;
    }
    if (opts->min_cluster_size < 0 ||
        (opts->min_cluster_size & (opts->min_cluster_size - 1))) {
        error_setg(errp, "min-cluster-size needs to be a power of 2");
        return false;
    }
    opts->max_workers = max_workers;
    return true;
}

/*
 * What QEMU checks when it creates the job, before the job layer's own
 * checks (backup_job_create()).
 */
static bool backup_check_nodes(BackupCommon *args, BlockDriverState *bs,
                               BlockDriverState *target, Error **errp)
{
    if (bs == target) {
        error_setg(errp, "Source and target cannot be the same");
        return false;
    }
    /*
     * Only qcow2 writes compressed clusters, also below filters that pass
     * them on.  QEMU names the target's device, which a storage daemon's
     * nodes never have.
     */
    if (args->has_compress && args->compress &&
        !bdrv_supports_compressed_writes(target)) {
        error_setg(errp, "Compression is not supported for this drive %s",
                   "");
        return false;
    }
    return !bdrv_op_is_blocked(bs, errp) && !bdrv_op_is_blocked(target, errp);
}

static void backup_common_flags(BackupCommon *args, BackupJobOptions *opts)
{
    opts->creation_flags = JOB_DEFAULT;
    if (args->has_auto_finalize && !args->auto_finalize) {
        opts->creation_flags |= JOB_MANUAL_FINALIZE;
    }
    if (args->has_auto_dismiss && !args->auto_dismiss) {
        opts->creation_flags |= JOB_MANUAL_DISMISS;
    }
}

BlockJob *backup_prepare_common(BackupCommon *args, BlockDriverState *bs,
                                BlockDriverState *target, JobTxn *txn,
                                Error **errp)
{
    BackupJobOptions opts = {
        /* QEMU's default is the device name, which nodes here lack. */
        .job_id = args->job_id ? args->job_id : "",
        .source = bs,
        .target = target,
        .speed = args->has_speed ? args->speed : 0,
        .on_source_error = args->has_on_source_error
                           ? args->on_source_error : BLOCKDEV_ON_ERROR_REPORT,
        .on_target_error = args->has_on_target_error
                           ? args->on_target_error : BLOCKDEV_ON_ERROR_REPORT,
        .on_cbw_error = args->has_on_cbw_error
                        ? args->on_cbw_error
                        : ON_CBW_ERROR_BREAK_GUEST_WRITE,
        .filter_node_name = args->filter_node_name,
        .compress = args->has_compress && args->compress,
        .discard_source = args->has_discard_source && args->discard_source,
        .write_behind_bytes = args->has___org_blockd_write_behind_buffer
                              ? args->__org_blockd_write_behind_buffer : 0,
        .write_behind_spill_bytes =
            args->has___org_blockd_write_behind_spill_size
            ? args->__org_blockd_write_behind_spill_size : 0,
        .write_behind_spill_dir = args->__org_blockd_write_behind_spill_dir,
    };

    if (!backup_check_sync_bitmap(args, bs, &opts, errp)) {
        return NULL;
    }
    backup_common_flags(args, &opts);
    if (!backup_check_nodes(args, bs, target, errp) ||
        !backup_check_perf(args->x_perf, &opts, errp)) {
        return NULL;
    }
    return backup_job_create(&opts, txn, errp);
}

BlockJob *coroutine_fn blockdev_backup_prepare(BlockdevBackup *args,
                                               JobTxn *txn, Error **errp)
{
    BlockDriverState *bs, *target;

    bs = bdrv_lookup_bs(args->device, args->device, errp);
    if (!bs) {
        return NULL;
    }
    target = bdrv_lookup_bs(args->target, args->target, errp);
    if (!target) {
        return NULL;
    }
    return backup_prepare_common(qapi_BlockdevBackup_base(args), bs, target,
                                 txn, errp);
}

void coroutine_fn backup_run_transaction(TransactionAction *action,
                                         Error **errp)
{
    TransactionActionList list = { .value = action };

    qmp_transaction(&list, NULL, errp);
}

void coroutine_fn qmp_blockdev_backup(BlockdevBackup *args, Error **errp)
{
    TransactionAction action = {
        .type = TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP,
        .u.blockdev_backup.data = args,
    };

    backup_run_transaction(&action, errp);
}
