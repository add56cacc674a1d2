/*
 * Backing chains: opening a node's backing child and walking the chain.
 *
 * A format driver only reads its image: it stores the backing file name
 * and format its header records in bs->backing_file and
 * bs->backing_format.  The core then opens the backing child, after the
 * driver's own open succeeded, as QEMU does:
 *
 *  - the node's "backing" option wins: null means no backing node, a
 *    string names an existing node, a definition opens a new one;
 *  - without the option, the header's backing file is opened read-only,
 *    its path taken relative to the image's directory, its format from the
 *    header or probed;
 *
 * and attaches it in the BDRV_CHILD_COW role, which is how generic code
 * (permissions, queries, block status) finds it: through bs->backing,
 * never through a driver's private state.
 */
#include "block/block_int.h"
#include "qapi/qapi-types.h"
#include "qapi/util.h"

#include <fcntl.h>

/* The "backing" option of the formats that have one. */
static BlockdevRefOrNull *backing_option(BlockdevOptions *options)
{
    if (options && options->driver == BLOCKDEV_DRIVER_QCOW2) {
        return options->u.qcow2.backing;
    }
    return NULL;
}

/*
 * Format of a backing file whose image does not record it: the driver
 * whose probe scores its first sector highest, else raw.
 */
static int probe_format(const char *path)
{
    uint8_t buf[512] = { 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t len = 0;

    if (fd >= 0) {
        len = pread(fd, buf, sizeof(buf), 0);
        close(fd);
    }
    return qapi_enum_parse(BlockdevDriver_lookup, BLOCKDEV_DRIVER__MAX,
                           bdrv_probe_format(buf, MAX(len, 0)));
}

char *bdrv_full_backing_filename(BlockDriverState *bs)
{
    g_autofree char *dir = NULL;

    if (!bs->backing_file) {
        return NULL;
    }
    if (g_path_is_absolute(bs->backing_file)) {
        return g_strdup(bs->backing_file);
    }
    dir = g_path_get_dirname(bs->filename);
    return g_build_filename(dir, bs->backing_file, NULL);
}

/* The definition of the backing node the image header names. */
static BlockdevRef *header_backing_ref(BlockDriverState *bs, Error **errp)
{
    g_autoptr(BlockdevRef) ref = g_new0(BlockdevRef, 1);
    BlockdevOptions *opts = &ref->u.definition;
    g_autofree char *path = NULL;
    BlockdevRef *file_ref;
    int fmt;

    if (g_str_has_prefix(bs->backing_file, "json:") ||
        (strchr(bs->backing_file, ':') && !strchr(bs->backing_file, '/'))) {
        error_setg(errp, "%s: backing file '%s': protocols other than "
                   "plain files are not supported", bs->drv->format_name,
                   bs->backing_file);
        return NULL;
    }
    path = bdrv_full_backing_filename(bs);
    if (bs->backing_format) {
        fmt = qapi_enum_parse(BlockdevDriver_lookup, BLOCKDEV_DRIVER__MAX,
                              bs->backing_format);
        if (fmt != BLOCKDEV_DRIVER_QCOW2 && fmt != BLOCKDEV_DRIVER_RAW &&
            fmt != BLOCKDEV_DRIVER_FILE) {
            error_setg(errp, "Could not open backing file: Unknown driver "
                       "'%s'", bs->backing_format);
            return NULL;
        }
    } else {
        fmt = probe_format(path);
    }

    ref->type = QTYPE_QDICT;
    opts->driver = fmt;
    opts->has_read_only = true;
    opts->read_only = true;
    if (fmt == BLOCKDEV_DRIVER_FILE) {
        opts->u.file.filename = g_steal_pointer(&path);
        return g_steal_pointer(&ref);
    }
    file_ref = g_new0(BlockdevRef, 1);
    file_ref->type = QTYPE_QDICT;
    file_ref->u.definition.driver = BLOCKDEV_DRIVER_FILE;
    file_ref->u.definition.u.file.filename = g_steal_pointer(&path);
    if (fmt == BLOCKDEV_DRIVER_QCOW2) {
        opts->u.qcow2.file = file_ref;
    } else {
        opts->u.raw.file = file_ref;
    }
    return g_steal_pointer(&ref);
}

bool coroutine_fn bdrv_open_backing(BlockDriverState *bs,
                                    BlockdevOptions *options, Error **errp)
{
    ERRP_GUARD();
    BlockdevRefOrNull *opt = backing_option(options);
    g_autoptr(BlockdevRef) header_ref = NULL;
    BlockdevRef ref;
    bool read_only = bs->read_only;

    if (!opt) {
        if (!bs->backing_file) {
            return true;
        }
        header_ref = header_backing_ref(bs, errp);
        if (!header_ref) {
            return false;
        }
        if (!bdrv_open_child(bs, header_ref, "backing", BDRV_CHILD_COW,
                             errp)) {
            error_prepend(errp, "Could not open backing file: ");
            return false;
        }
        return true;
    }

    switch (opt->type) {
    case QTYPE_QNULL:
        return true;
    case QTYPE_QSTRING:
        if (!*opt->u.reference) {
            return true;
        }
        ref.type = QTYPE_QSTRING;
        ref.u.reference = opt->u.reference;
        break;
    default:
        ref.type = QTYPE_QDICT;
        ref.u.definition = opt->u.definition;   /* borrowed, not freed */
        break;
    }
    /* A backing node defined inline defaults to read-only. */
    bs->read_only = true;
    bdrv_open_child(bs, &ref, "backing", BDRV_CHILD_COW, errp);
    bs->read_only = read_only;
    if (!bs->backing) {
        error_prepend(errp, "Could not open backing file: ");
        return false;
    }
    return true;
}

int bdrv_backing_file_depth(BlockDriverState *bs)
{
    int depth = 0;

    for (bs = bs->backing ? bs->backing->bs : NULL; bs;
         bs = bs->backing ? bs->backing->bs : NULL) {
        depth++;
    }
    return depth;
}
