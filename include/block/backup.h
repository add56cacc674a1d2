/*
 * The backup job (block/backup.c): a copy-before-write filter above the
 * source keeps the target at the point in time of the job's start, and
 * the job copies the rest in the background through the filter's
 * block-copy state.  blockdev-backup, drive-backup and their transaction
 * actions (block/monitor/backup-qmp.c) create it.
 *
 * Main loop only.
 */
#ifndef BLOCK_BACKUP_H
#define BLOCK_BACKUP_H

#include "block/blockjob.h"
#include "block/dirty-bitmap.h"
#include "qapi/qapi-types.h"

/* Everything the QMP layer validated, in the job's terms. */
typedef struct BackupJobOptions {
    const char *job_id;
    BlockDriverState *source;
    BlockDriverState *target;
    MirrorSyncMode sync;            /* incremental is already bitmap */
    BdrvDirtyBitmap *sync_bitmap;   /* NULL: none */
    BitmapSyncMode bitmap_mode;     /* with sync_bitmap */
    int64_t speed;
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    OnCbwError on_cbw_error;
    int creation_flags;             /* JobCreateFlags */
    const char *filter_node_name;   /* NULL: generated */
    bool compress;
    bool use_copy_range;
    int max_workers;
    int64_t max_chunk;              /* 0: no limit */
    int64_t min_cluster_size;       /* 0: none */
    bool discard_source;
    uint64_t write_behind_bytes;    /* 0: off (a blockd extension) */
    uint64_t write_behind_spill_bytes;      /* 0: none (blockd) */
    const char *write_behind_spill_dir;     /* NULL: the default */
} BackupJobOptions;

/*
 * backup_job_create:
 * The job-creation half of QEMU's checks, in QEMU's order: the bitmap's
 * writability and successor, equal sizes, the filter insertion
 * (permission conflicts), max-chunk against the cluster size, the job
 * id.  On success the job is "created" (job_start() runs it), its
 * bitmap frozen and its filter in the graph; on failure nothing changed.
 */
BlockJob *backup_job_create(const BackupJobOptions *opts, JobTxn *txn,
                            Error **errp);

#endif /* BLOCK_BACKUP_H */
