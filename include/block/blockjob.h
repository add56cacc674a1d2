/*
 * Block jobs: jobs that work on block nodes (backup, mirror, ...).
 *
 * A BlockJob embeds a Job and adds what the block-job-* commands and the
 * BLOCK_JOB_* events need: a rate limit (block-job-set-speed), the I/O
 * status of error stops, and the backends through which the job uses its
 * nodes.  The job core calls back through JobHooks to emit the events.
 */
#ifndef BLOCK_BLOCKJOB_H
#define BLOCK_BLOCKJOB_H

#include "block/job.h"
#include "block/block-common.h"
#include "util/ratelimit.h"

typedef struct BlockJob BlockJob;

typedef struct BlockJobDriver {
    /* Must come first: a BlockJobDriver is a JobDriver. */
    JobDriver job_driver;

    /* Optional: block-job-set-speed changed the limit to @speed. */
    void (*set_speed)(BlockJob *job, int64_t speed);
} BlockJobDriver;

struct BlockJob {
    /* Must come first. */
    Job job;

    /* Main loop only. */
    int64_t speed;                  /* bytes per second, 0: unlimited */
    RateLimit limit;
    BlockDeviceIoStatus iostatus;
    GSList *backends;               /* BlockBackend *, released at free */
};

/*
 * block_job_create:
 * @speed: initial rate limit in bytes per second (0: none)
 *
 * Like job_create() (same flags and errors), for a driver whose job type
 * is a block job type.  Fails with "Parameter 'speed' expects a
 * non-negative value" for a negative @speed.
 */
void *block_job_create(const char *job_id, const BlockJobDriver *driver,
                       JobTxn *txn, int64_t speed, int flags,
                       JobCompletionFunc *cb, void *opaque, Error **errp);

/*
 * block_job_add_bdrv: use @bs through a backend owned by the job (taking
 * @perm, sharing @shared_perm), released when the job is freed.  The node
 * is busy meanwhile (an op blocker: "block device is in use by block
 * job: TYPE").  Returns the backend, or NULL on a permission conflict.
 */
BlockBackend *block_job_add_bdrv(BlockJob *job, BlockDriverState *bs,
                                 uint64_t perm, uint64_t shared_perm,
                                 Error **errp);
/*
 * Release the job's backends and op blockers now rather than when the
 * job goes (at clean: a concluded job holds no node, as in QEMU).
 */
void block_job_remove_all_bdrv(BlockJob *job);

/* Is this job a block job?  (By type, as QEMU decides.) */
bool is_block_job(const Job *job);
/* The named block job, or NULL. */
BlockJob *block_job_get(const char *id);

/* block-job-set-speed: checks the value and the verb table. */
bool block_job_set_speed(BlockJob *job, int64_t speed, Error **errp);

/*
 * Rate limiting for the job's copy loop: account @n bytes just
 * processed, then block_job_ratelimit_sleep() waits as long as the limit
 * demands (ending early on cancel, pausing if asked to).
 */
void block_job_ratelimit_processed_bytes(BlockJob *job, uint64_t n);
void coroutine_fn block_job_ratelimit_sleep(BlockJob *job);

/*
 * The action an error policy (on-source-error, on-target-error) takes
 * for an I/O error @error (positive errno): enospc and auto stop on
 * ENOSPC and report anything else.
 */
BlockErrorAction block_job_error_policy(BlockdevOnError on_err, int error);

/*
 * block_job_error_action: report an I/O error decision (BLOCK_JOB_ERROR).
 * With BLOCK_ERROR_ACTION_STOP the job is paused as if by the user and
 * its io-status records the error until job-resume.
 */
void block_job_error_action(BlockJob *job, BlockErrorAction action,
                            bool is_read, int error);

/* The query-block-jobs entry of a named block job. */
BlockJobInfo *block_job_query(BlockJob *job);

#endif /* BLOCK_BLOCKJOB_H */
