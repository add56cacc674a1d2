/*
 * blockdev-create: image creation as a job of type "create".
 *
 * The QMP handler checks that the driver can create images, then starts
 * a job that calls the driver's bdrv_co_create() with a private copy of
 * the options (the command's arguments die when the handler returns).
 * As in QEMU the job is never dismissed automatically, so its result
 * (the "error" of query-jobs) stays visible until job-dismiss, and its
 * progress is 0/1 then 1/1 whatever the outcome.  Creation is not
 * interruptible: a cancel takes effect when the driver returns.
 */
#include "block/block_int.h"
#include "block/job.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"

typedef struct BlockdevCreateJob {
    Job common;
    const BlockDriver *drv;
    BlockdevCreateOptions *opts;
} BlockdevCreateJob;

static int coroutine_fn blockdev_create_run(Job *job, Error **errp)
{
    BlockdevCreateJob *s = container_of(job, BlockdevCreateJob, common);
    int ret;

    job_progress_set_remaining(job, 1);
    ret = s->drv->bdrv_co_create(s->opts, errp);
    job_progress_update(job, 1);
    return ret;
}

static void blockdev_create_free(Job *job)
{
    BlockdevCreateJob *s = container_of(job, BlockdevCreateJob, common);

    qapi_free_BlockdevCreateOptions(s->opts);
}

static const JobDriver blockdev_create_job_driver = {
    .instance_size = sizeof(BlockdevCreateJob),
    .job_type = JOB_TYPE_CREATE,
    .run = blockdev_create_run,
    .free = blockdev_create_free,
};

/* A deep copy through the generated visitors (output, then input). */
static BlockdevCreateOptions *create_options_copy(BlockdevCreateOptions *src)
{
    BlockdevCreateOptions *copy = NULL;
    json_object *obj = NULL;
    Visitor *v = qobject_output_visitor_new(&obj);

    visit_type_BlockdevCreateOptions(v, NULL, &src, &error_abort);
    visit_complete(v, &obj);
    visit_free(v);
    v = qobject_input_visitor_new(obj);
    visit_type_BlockdevCreateOptions(v, NULL, &copy, &error_abort);
    visit_free(v);
    json_object_put(obj);
    return copy;
}

void qmp_blockdev_create(const char *job_id, BlockdevCreateOptions *options,
                         Error **errp)
{
    const char *fmt = BlockdevDriver_str(options->driver);
    const BlockDriver *drv = bdrv_find_driver(fmt);
    BlockdevCreateJob *s;

    if (!drv) {
        error_setg(errp, "Block driver '%s' not found or not supported",
                   fmt);
        return;
    }
    if (!drv->bdrv_co_create) {
        error_setg(errp, "Driver does not support blockdev-create");
        return;
    }
    s = job_create(job_id, &blockdev_create_job_driver, NULL,
                   JOB_DEFAULT | JOB_MANUAL_DISMISS, NULL, NULL, errp);
    if (!s) {
        return;
    }
    s->drv = drv;
    s->opts = create_options_copy(options);
    job_start(&s->common);
}
