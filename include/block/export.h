/*
 * Block exports: the generic layer under block-export-add/-del.
 *
 * A BlockExport makes one node reachable from outside the daemon (today
 * only over NBD).  The generic layer owns what every export type shares:
 * the export id, the BlockBackend on the node, the reference count and the
 * deletion protocol.  An export type plugs in through a BlockExportDriver.
 *
 * Life cycle (main loop only):
 *
 *   blk_exp_add()            refcount 1 (the export table's reference),
 *                            listed by query-block-exports
 *   blk_exp_ref()/unref()    users of the export (e.g. each connected NBD
 *                            client) hold a reference each
 *   blk_exp_request_shutdown()
 *                            stops new users, asks the driver to drop the
 *                            current ones, then drops the table's
 *                            reference; still listed with shutting-down
 *   refcount reaches 0       from a bottom half: the driver frees its
 *                            state, the BlockBackend is released,
 *                            BLOCK_EXPORT_DELETED is sent and the id
 *                            becomes free for reuse
 */
#ifndef BLOCK_EXPORT_H
#define BLOCK_EXPORT_H

#include "block/block-common.h"
#include "qapi/qapi-types.h"

typedef struct BlockExport BlockExport;

typedef struct BlockExportDriver {
    /* The QAPI type this driver implements. */
    BlockExportType type;

    /* Size of the driver's instance struct, which starts with BlockExport. */
    size_t instance_size;

    /*
     * Finish setting up @exp from @opts.  exp->id and exp->blk are valid.
     * On failure, the generic layer releases exp->blk and frees @exp
     * without calling @delete.
     */
    bool (*create)(BlockExport *exp, BlockExportOptions *opts, Error **errp);

    /*
     * Stop accepting new users and make the current ones go away soon
     * (each drops its reference when it has gone).  Called once.
     */
    void (*request_shutdown)(BlockExport *exp);

    /* Free the driver's state; the refcount is 0. */
    void (*delete)(BlockExport *exp);
} BlockExportDriver;

struct BlockExport {
    /* Set at creation, never changed. */
    const BlockExportDriver *drv;
    char *id;
    BlockBackend *blk;
    bool writable;
    /* Writes get BDRV_REQ_FUA (the export's writethrough option). */
    bool writethrough;

    /* Main loop only. */
    int refcount;
    bool shutting_down;   /* blk_exp_request_shutdown() was called */
};

/*
 * blk_exp_add:
 * @opts: the export's options, as given to block-export-add or --export
 *
 * Create and publish an export.  Returns false and sets @errp on failure,
 * in which case nothing changed.
 */
bool blk_exp_add(BlockExportOptions *opts, Error **errp);

/* The export with this id (including ones shutting down), or NULL. */
BlockExport *blk_exp_find(const char *id);

void blk_exp_ref(BlockExport *exp);
/* Drop a reference; the last one deletes the export from a bottom half. */
void blk_exp_unref(BlockExport *exp);

/*
 * Begin removing @exp: no new users, current users are asked to go.
 * Idempotent.  The export is deleted once its last reference is dropped.
 */
void blk_exp_request_shutdown(BlockExport *exp);

/*
 * Request shutdown of every export of @type and wait until they are all
 * deleted: in coroutine context by yielding, otherwise by iterating the
 * main loop.
 */
void blk_exp_close_all_type(BlockExportType type);

/* Same, for every export: for daemon shutdown. */
void blk_exp_close_all(void);

#endif /* BLOCK_EXPORT_H */
