/*
 * QMP commands of the job core: job-* (generic, GenericError "Job not
 * found") and block-job-* (older, DeviceNotActive "Block job 'X' not
 * found"), plus the two queries.  Every state rule lives in block/jobs/job.c;
 * this file only looks jobs up, as QEMU does, and hides internal ones.
 */
#include "block/job.h"
#include "block/blockjob.h"
#include "qapi/qapi-commands.h"

static Job *find_job(const char *id, Error **errp)
{
    Job *job = job_get(id);

    if (!job) {
        error_setg(errp, "Job not found");
    }
    return job;
}

static BlockJob *find_block_job(const char *id, Error **errp)
{
    BlockJob *job = block_job_get(id);

    if (!job) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
                  "Block job '%s' not found", id);
    }
    return job;
}

void qmp_job_pause(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_user_pause(job, errp);
    }
}

void qmp_job_resume(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_user_resume(job, errp);
    }
}

void qmp_job_cancel(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_user_cancel(job, true, errp);
    }
}

void qmp_job_complete(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_complete(job, errp);
    }
}

void qmp_job_finalize(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_ref(job);
        job_finalize(job, errp);
        job_unref(job);
    }
}

void qmp_job_dismiss(const char *id, Error **errp)
{
    Job *job = find_job(id, errp);

    if (job) {
        job_dismiss(&job, errp);
    }
}

JobInfoList *qmp_query_jobs(Error **errp)
{
    JobInfoList *head = NULL, **tail = &head;

    for (Job *job = job_next(NULL); job; job = job_next(job)) {
        JobInfoList *entry;

        if (job_is_internal(job)) {
            continue;
        }
        entry = g_new0(JobInfoList, 1);
        entry->value = job_query_single(job);
        *tail = entry;
        tail = &entry->next;
    }
    return head;
}

BlockJobInfoList *qmp_query_block_jobs(Error **errp)
{
    BlockJobInfoList *head = NULL, **tail = &head;

    for (Job *job = job_next(NULL); job; job = job_next(job)) {
        BlockJobInfoList *entry;

        if (job_is_internal(job) || !is_block_job(job)) {
            continue;
        }
        entry = g_new0(BlockJobInfoList, 1);
        entry->value = block_job_query(container_of(job, BlockJob, job));
        *tail = entry;
        tail = &entry->next;
    }
    return head;
}

void qmp_block_job_set_speed(const char *device, int64_t speed, Error **errp)
{
    BlockJob *job = find_block_job(device, errp);

    if (job) {
        block_job_set_speed(job, speed, errp);
    }
}

void qmp_block_job_cancel(const char *device, bool has_force, bool force,
                          Error **errp)
{
    BlockJob *job = find_block_job(device, errp);

    if (!job) {
        return;
    }
    if (!has_force) {
        force = false;
    }
    if (job_user_paused(&job->job) && !force) {
        error_setg(errp, "The block job for device '%s' is currently paused",
                   device);
        return;
    }
    job_user_cancel(&job->job, force, errp);
}

void qmp_block_job_pause(const char *device, Error **errp)
{
    BlockJob *job = find_block_job(device, errp);

    if (job) {
        job_user_pause(&job->job, errp);
    }
}

void qmp_block_job_resume(const char *device, Error **errp)
{
    BlockJob *job = find_block_job(device, errp);

    if (job) {
        job_user_resume(&job->job, errp);
    }
}

void qmp_block_job_complete(const char *device, Error **errp)
{
    BlockJob *job = find_block_job(device, errp);

    if (job) {
        job_complete(&job->job, errp);
    }
}

void qmp_block_job_finalize(const char *id, Error **errp)
{
    BlockJob *job = find_block_job(id, errp);

    if (job) {
        job_ref(&job->job);
        job_finalize(&job->job, errp);
        job_unref(&job->job);
    }
}

void qmp_block_job_dismiss(const char *id, Error **errp)
{
    BlockJob *job = find_block_job(id, errp);
    Job *j;

    if (job) {
        j = &job->job;
        job_dismiss(&j, errp);
    }
}
