/*
 * Block exports: the generic layer and its QMP commands.
 *
 * Design notes
 *
 * Exports live in one list, newest first (the order query-block-exports
 * reports, as QEMU does).  An export stays in the list, and its id stays
 * taken, until it is really gone: removing it is a request
 * (blk_exp_request_shutdown) that completes when the last reference is
 * dropped.  References are held by the list (until shutdown is requested)
 * and by each user, e.g. each connected NBD client.
 *
 * When the last reference is dropped in coroutine context (typically by a
 * client's coroutine as it exits), the final release is deferred to a
 * bottom half: releasing the BlockBackend drains it, which must not run on
 * a coroutine stack that belongs to one of its users.  Outside coroutines
 * (a QMP command on an export without clients) it happens at once, so the
 * id is free and the event sent before the command returns.
 *
 * block-export-del in "safe" mode refuses while users are connected; in
 * "hard" mode the driver disconnects them.  BLOCK_EXPORT_DELETED is sent
 * when the export has been freed, so a client of the event may reuse the
 * id at once.
 *
 * Permissions: the export takes CONSISTENT_READ, plus WRITE when
 * writable, and lets others do anything except resize the node.  NBD
 * clients learn the size once, at the handshake, and a resize under them
 * would make that size a lie; everything else (backup, fleecing, a
 * second export) may share the node.
 */
#include "util/id.h"
#include "util/osdep.h"
#include "util/coroutine.h"
#include "util/main-loop.h"
#include "block/block.h"
#include "block/block-backend.h"
#include "block/export.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-events.h"

extern const BlockExportDriver blk_exp_nbd;

static const BlockExportDriver *const blk_exp_drivers[] = {
    &blk_exp_nbd,
};

/* All exports, newest first.  Main loop only. */
static GList *block_exports;

/* Coroutines waiting in blk_exp_close_all_type() for a deletion. */
static CoQueue blk_exp_deleted_waiters = {
    .waiters = G_QUEUE_INIT,
};

static const BlockExportDriver *blk_exp_find_driver(BlockExportType type)
{
    for (size_t i = 0; i < ARRAY_SIZE(blk_exp_drivers); i++) {
        if (blk_exp_drivers[i]->type == type) {
            return blk_exp_drivers[i];
        }
    }
    return NULL;
}

BlockExport *blk_exp_find(const char *id)
{
    for (GList *l = block_exports; l; l = l->next) {
        BlockExport *exp = l->data;

        if (!strcmp(exp->id, id)) {
            return exp;
        }
    }
    return NULL;
}

bool blk_exp_add(BlockExportOptions *opts, Error **errp)
{
    const BlockExportDriver *drv = blk_exp_find_driver(opts->type);
    bool writable = opts->has_writable && opts->writable;
    uint64_t perm = BLK_PERM_CONSISTENT_READ;
    uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    BlockDriverState *bs;
    BlockBackend *blk;
    BlockExport *exp;

    if (!drv) {
        error_setg(errp, "No driver found for the requested export type");
        return false;
    }
    if (!id_wellformed(opts->id)) {
        error_setg(errp, "Invalid block export id");
        return false;
    }
    if (blk_exp_find(opts->id)) {
        error_setg(errp, "Block export id '%s' is already in use", opts->id);
        return false;
    }
    bs = bdrv_lookup_bs("", opts->node_name, errp);
    if (!bs) {
        return false;
    }
    if (opts->iothread) {
        /* blockd has no iothreads, so no name can match. */
        error_setg(errp, "iothread \"%s\" not found", opts->iothread);
        return false;
    }
    if (writable && bdrv_is_read_only(bs)) {
        error_setg(errp, "Cannot export read-only node as writable");
        return false;
    }
    if (writable) {
        perm |= BLK_PERM_WRITE;
    }

    blk = blk_new_with_bs(bs, BLK_ANONYMOUS_USER, perm, shared, errp);
    if (!blk) {
        return false;
    }

    exp = g_malloc0(drv->instance_size);
    exp->drv = drv;
    exp->id = g_strdup(opts->id);
    exp->blk = blk;
    exp->writable = writable;
    exp->writethrough = opts->has_writethrough && opts->writethrough;
    exp->refcount = 1;

    if (!drv->create(exp, opts, errp)) {
        blk_unref(blk);
        g_free(exp->id);
        g_free(exp);
        return false;
    }

    block_exports = g_list_prepend(block_exports, exp);
    return true;
}

void blk_exp_ref(BlockExport *exp)
{
    g_assert(exp->refcount > 0);
    exp->refcount++;
}

static void blk_exp_delete(void *opaque)
{
    BlockExport *exp = opaque;

    g_assert(exp->refcount == 0);
    exp->drv->delete(exp);
    blk_unref(exp->blk);
    block_exports = g_list_remove(block_exports, exp);
    qapi_event_send_block_export_deleted(exp->id);
    g_free(exp->id);
    g_free(exp);
    co_queue_restart_all(&blk_exp_deleted_waiters);
}

void blk_exp_unref(BlockExport *exp)
{
    g_assert(exp->refcount > 0);
    if (--exp->refcount == 0) {
        /* Only the list's reference can be last, and it goes at shutdown. */
        g_assert(exp->shutting_down);
        if (in_coroutine()) {
            bh_schedule(blk_exp_delete, exp);
        } else {
            blk_exp_delete(exp);
        }
    }
}

void blk_exp_request_shutdown(BlockExport *exp)
{
    if (exp->shutting_down) {
        return;
    }
    exp->shutting_down = true;
    exp->drv->request_shutdown(exp);
    blk_exp_unref(exp);
}

static bool blk_exp_any_of_type(BlockExportType type)
{
    for (GList *l = block_exports; l; l = l->next) {
        BlockExport *exp = l->data;

        if (exp->drv->type == type) {
            return true;
        }
    }
    return false;
}

void blk_exp_close_all_type(BlockExportType type)
{
    GList *l = block_exports;

    while (l) {
        BlockExport *exp = l->data;

        /* Shutdown never frees synchronously, so l->next stays valid. */
        l = l->next;
        if (exp->drv->type == type) {
            blk_exp_request_shutdown(exp);
        }
    }

    /*
     * Wait for the clients to go and the exports to be freed: a coroutine
     * (a QMP command, a command line option) yields until each deletion,
     * anything else iterates the main loop.
     */
    while (blk_exp_any_of_type(type)) {
        if (in_coroutine()) {
            co_queue_wait(&blk_exp_deleted_waiters);
        } else {
            main_loop_wait(true);
        }
    }
}

void blk_exp_close_all(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(blk_exp_drivers); i++) {
        blk_exp_close_all_type(blk_exp_drivers[i]->type);
    }
}

void qmp_block_export_add(BlockExportOptions *arg, Error **errp)
{
    blk_exp_add(arg, errp);
}

void qmp_block_export_del(const char *id, bool has_mode,
                          BlockExportRemoveMode mode, Error **errp)
{
    ERRP_GUARD();
    BlockExport *exp = blk_exp_find(id);

    if (!exp) {
        error_setg(errp, "Export '%s' is not found", id);
        return;
    }
    if (exp->shutting_down) {
        error_setg(errp, "Export '%s' is already shutting down", id);
        return;
    }
    if (!has_mode) {
        mode = BLOCK_EXPORT_REMOVE_MODE_SAFE;
    }
    /* The list holds one reference; any other one is a user. */
    if (mode == BLOCK_EXPORT_REMOVE_MODE_SAFE && exp->refcount > 1) {
        error_setg(errp, "export '%s' still in use", id);
        error_append_hint(errp, "Use mode='hard' to disconnect its "
                          "clients\n");
        return;
    }
    blk_exp_request_shutdown(exp);
}

BlockExportInfoList *qmp_query_block_exports(Error **errp)
{
    BlockExportInfoList *head = NULL;
    BlockExportInfoList **tail = &head;

    (void)errp;
    for (GList *l = block_exports; l; l = l->next) {
        BlockExport *exp = l->data;
        BlockExportInfo *info = g_new0(BlockExportInfo, 1);
        BlockExportInfoList *node = g_new0(BlockExportInfoList, 1);

        info->id = g_strdup(exp->id);
        info->type = exp->drv->type;
        info->node_name = g_strdup(bdrv_get_node_name(blk_bs(exp->blk)));
        info->shutting_down = exp->shutting_down;
        node->value = info;
        *tail = node;
        tail = &node->next;
    }
    return head;
}
