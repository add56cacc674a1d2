/*
 * The "nbd" block export type.
 *
 * A thin adapter: it checks the NBD-specific options of block-export-add
 * and hands the export to the NBD server (nbd/export.c), which publishes
 * it under its name and serves its clients.  The generic layer
 * (export.c) owns the BlockBackend and the reference count.
 *
 * Option checks run in QEMU's order, so that a command with several
 * problems reports the same one: server running, name length,
 * description length, then (in the server) a duplicate name and the
 * bitmaps, one after the other.
 */
#include "util/osdep.h"
#include "block/export.h"
#include "nbd/nbd.h"

typedef struct NBDBlockExport {
    BlockExport common;
    NBDExport *nbd;     /* set at creation, never changed */
} NBDBlockExport;

static bool blk_exp_nbd_create(BlockExport *exp, BlockExportOptions *opts,
                               Error **errp)
{
    NBDBlockExport *nexp = container_of(exp, NBDBlockExport, common);
    BlockExportOptionsNbd *nbd = &opts->u.nbd;
    const char *name = nbd->name ? nbd->name : opts->node_name;

    if (!nbd_server_is_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    if (strlen(name) > NBD_MAX_NAME_SIZE) {
        error_setg(errp, "export name '%s' too long", name);
        return false;
    }
    if (nbd->description &&
        strlen(nbd->description) > NBD_MAX_NAME_SIZE) {
        error_setg(errp, "description '%s' too long", nbd->description);
        return false;
    }
    nexp->nbd = nbd_export_new(exp, name, nbd->description,
                               nbd->has_allocation_depth &&
                               nbd->allocation_depth,
                               nbd->bitmaps,
                               nbd->has_multi_conn ? nbd->multi_conn
                                                   : ON_OFF_AUTO_AUTO,
                               errp);
    return nexp->nbd != NULL;
}

static void blk_exp_nbd_request_shutdown(BlockExport *exp)
{
    NBDBlockExport *nexp = container_of(exp, NBDBlockExport, common);

    nbd_export_close(nexp->nbd);
}

static void blk_exp_nbd_delete(BlockExport *exp)
{
    NBDBlockExport *nexp = container_of(exp, NBDBlockExport, common);

    nbd_export_free(nexp->nbd);
}

const BlockExportDriver blk_exp_nbd = {
    .type               = BLOCK_EXPORT_TYPE_NBD,
    .instance_size      = sizeof(NBDBlockExport),
    .create             = blk_exp_nbd_create,
    .request_shutdown   = blk_exp_nbd_request_shutdown,
    .delete             = blk_exp_nbd_delete,
};
