/*
 * drive-backup: blockdev-backup to an image file that the command
 * creates (qcow2 or raw) and opens, as QEMU 7.2 does.
 *
 * The new image gets the source's size.  Its backing file, for QEMU's
 * legacy uses: with sync=top, the backing file of the source (below any
 * filter), so that the target alone reads as the whole disk (without
 * one, top becomes full); with sync=none, the source node itself
 * (fleecing: the target shows the point in time, unchanged clusters read
 * through).  That edge is made once the job's filter is above the
 * source, so that it points below the filter, as in QEMU (moving it onto
 * the filter would make a cycle: the filter writes to the target).  The
 * target is opened with discard=unmap and
 * detect-zeroes=unmap, so that zero runs of the source stay sparse.
 * Its node is anonymous, owned by the job, and closed with it.
 */
#include "block/backup-qmp.h"
#include "block/block_int.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-input-visitor.h"

#include <fcntl.h>

#define PROBE_BYTES     512

static BlockDriverState *skip_filters(BlockDriverState *bs)
{
    while (bdrv_filtered_bs(bs)) {
        bs = bdrv_filtered_bs(bs);
    }
    return bs;
}

/* The JSON for {"driver": "file", "filename": @filename}. */
static json_object *file_ref(const char *filename)
{
    json_object *obj = json_object_new_object();

    json_object_object_add(obj, "driver", json_object_new_string("file"));
    json_object_object_add(obj, "filename", json_object_new_string(filename));
    return obj;
}

static bool create_run(json_object *obj, Error **errp)
{
    BlockdevCreateOptions *opts = NULL;
    Visitor *v = qobject_input_visitor_new(obj);
    bool ok = visit_type_BlockdevCreateOptions(v, NULL, &opts, errp);
    const BlockDriver *drv;

    visit_free(v);
    json_object_put(obj);
    if (!ok) {
        return false;
    }
    drv = bdrv_find_driver(BlockdevDriver_str(opts->driver));
    ok = drv->bdrv_co_create(opts, errp) == 0;
    qapi_free_BlockdevCreateOptions(opts);
    return ok;
}

/* Create @filename as a @format image of @size bytes on @backing. */
static bool coroutine_fn create_target(const char *filename,
                                       const char *format, int64_t size,
                                       BlockDriverState *backing,
                                       Error **errp)
{
    json_object *obj = json_object_new_object();
    bool qcow2 = !strcmp(format, "qcow2");

    if (!qcow2 && strcmp(format, "raw")) {
        error_setg(errp, "drive-backup creates qcow2 and raw images, "
                   "not '%s'", format);
        json_object_put(obj);
        return false;
    }
    if (!qcow2 && backing) {
        error_setg(errp, "Backing file specified but format '%s' does not "
                   "support backing files", format);
        json_object_put(obj);
        return false;
    }
    json_object_object_add(obj, "driver", json_object_new_string("file"));
    json_object_object_add(obj, "filename", json_object_new_string(filename));
    json_object_object_add(obj, "size", json_object_new_int64(qcow2 ? 0
                                                                    : size));
    if (!create_run(obj, errp)) {
        return false;
    }
    if (!qcow2) {
        return true;
    }
    obj = json_object_new_object();
    json_object_object_add(obj, "driver", json_object_new_string("qcow2"));
    json_object_object_add(obj, "file", file_ref(filename));
    json_object_object_add(obj, "size", json_object_new_int64(size));
    if (backing) {
        json_object_object_add(obj, "backing-file",
                               json_object_new_string(backing->filename));
        json_object_object_add(obj, "backing-fmt",
                               json_object_new_string(
                                   backing->drv->format_name));
    }
    return create_run(obj, errp);
}

/* mode=existing without a format: the image says what it is. */
static char *probe_format(const char *filename, Error **errp)
{
    uint8_t buf[PROBE_BYTES] = { 0 };
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    ssize_t len;

    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", filename);
        return NULL;
    }
    len = read(fd, buf, sizeof(buf));
    close(fd);
    return g_strdup(bdrv_probe_format(buf, len > 0 ? len : 0));
}

/* Open the target; @no_backing: without the backing its header names. */
static BlockDriverState *coroutine_fn open_target(const char *filename,
                                                  const char *format,
                                                  bool no_backing,
                                                  Error **errp)
{
    json_object *obj = json_object_new_object();
    BlockdevOptions *opts = NULL;
    BlockDriverState *bs = NULL;
    Visitor *v;

    json_object_object_add(obj, "driver", json_object_new_string(format));
    json_object_object_add(obj, "discard", json_object_new_string("unmap"));
    json_object_object_add(obj, "detect-zeroes",
                           json_object_new_string("unmap"));
    json_object_object_add(obj, "file", file_ref(filename));
    if (no_backing) {
        json_object_object_add(obj, "backing", NULL);
    }
    v = qobject_input_visitor_new(obj);
    if (visit_type_BlockdevOptions(v, NULL, &opts, errp)) {
        bs = bdrv_open_blockdev(opts, false, errp);
    }
    visit_free(v);
    json_object_put(obj);
    qapi_free_BlockdevOptions(opts);
    return bs;
}

/* sync=none: the target's backing is the source, below the filter. */
static bool set_target_backing(BlockDriverState *target,
                               BlockDriverState *source, Error **errp)
{
    BdrvReopenChange change = {
        .bs = target,
        .read_only = target->read_only,
        .set_backing = true,
        .backing = source,
        .detect_zeroes = target->detect_zeroes,
        .discard_unmap = target->discard_unmap,
    };

    return bdrv_reopen_multiple(&change, 1, errp);
}

BlockJob *coroutine_fn drive_backup_prepare(DriveBackup *args, JobTxn *txn,
                                            Error **errp)
{
    BackupCommon *common = qapi_DriveBackup_base(args);
    NewImageMode mode = args->has_mode ? args->mode
                                       : NEW_IMAGE_MODE_ABSOLUTE_PATHS;
    BlockDriverState *bs, *target, *create_backing = NULL;
    BlockDriverState *open_backing = NULL;
    g_autofree char *format = NULL;
    BlockJob *job;

    bs = bdrv_lookup_bs(args->device, args->device, errp);
    if (!bs) {
        return NULL;
    }
    if (args->sync == MIRROR_SYNC_MODE_TOP) {
        BlockDriverState *below = skip_filters(bs);

        create_backing = below->backing ? below->backing->bs : NULL;
        if (!create_backing) {
            args->sync = MIRROR_SYNC_MODE_FULL;
        }
    } else if (args->sync == MIRROR_SYNC_MODE_NONE) {
        open_backing = bs;
    }
    if (args->format) {
        format = g_strdup(args->format);
    } else if (mode == NEW_IMAGE_MODE_EXISTING) {
        format = probe_format(args->target, errp);
        if (!format) {
            return NULL;
        }
    } else {
        format = g_strdup(skip_filters(bs)->drv->format_name);
    }
    if (mode != NEW_IMAGE_MODE_EXISTING &&
        !create_target(args->target, format, bdrv_getlength(bs),
                       create_backing ? create_backing : open_backing,
                       errp)) {
        return NULL;
    }
    target = open_target(args->target, format, open_backing != NULL, errp);
    if (!target) {
        return NULL;
    }
    job = backup_prepare_common(common, bs, target, txn, errp);
    if (job && open_backing && !set_target_backing(target, open_backing,
                                                   errp)) {
        /* Never started: it completes at once. */
        job_cancel(&job->job, true);
        job = NULL;
    }
    /* The job holds the target now (or nobody does). */
    bdrv_unref(target);
    return job;
}

void coroutine_fn qmp_drive_backup(DriveBackup *args, Error **errp)
{
    TransactionAction action = {
        .type = TRANSACTION_ACTION_KIND_DRIVE_BACKUP,
        .u.drive_backup.data = args,
    };

    backup_run_transaction(&action, errp);
}
