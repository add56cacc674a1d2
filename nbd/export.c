/*
 * NBD exports: the name table and the clients of each export.
 *
 * An NBDExport is the NBD face of a BlockExport.  It is "published" (found
 * by name by NBD_OPT_GO, INFO, EXPORT_NAME, LIST and the meta context
 * options) from creation until nbd_export_close(); after that it only
 * waits for its clients to leave.
 *
 * Reference rules: the NBDExport holds no reference on its BlockExport;
 * each client in the transmission phase holds one (attach/detach below),
 * and so does a handshake while it sends information about the export.
 * The generic layer frees the NBDExport (nbd_export_free) only when the
 * last reference is gone, so a client's exp pointer is always valid.
 *
 * Transmission flags: everything a client can use is advertised.  Write
 * commands only on writable exports; NBD_FLAG_SEND_DF only to clients
 * with structured replies (it only means something there).
 * NBD_FLAG_CAN_MULTI_CONN is advertised whenever the server accepts more
 * than one connection, for writable exports too: all connections share
 * one BlockBackend in one process, so a flush on any connection flushes
 * every write that any connection has completed.
 */
#include "nbd/nbd-internal.h"
#include "block/block-backend.h"

/* Published exports, oldest first.  Main loop only. */
static GList *nbd_exports;

NBDExport *nbd_export_find(const char *name)
{
    for (GList *l = nbd_exports; l; l = l->next) {
        NBDExport *exp = l->data;

        if (!strcmp(exp->name, name)) {
            return exp;
        }
    }
    return NULL;
}

GList *nbd_export_list(void)
{
    return nbd_exports;
}

NBDExport *nbd_export_new(BlockExport *common, const char *name,
                          const char *description, bool allocation_depth,
                          BlockDirtyBitmapOrStrList *bitmaps,
                          OnOffAuto multi_conn, Error **errp)
{
    NBDExport *exp;
    int64_t size;

    if (!nbd_server_is_running()) {
        error_setg(errp, "NBD server not running");
        return NULL;
    }
    if (nbd_export_find(name)) {
        error_setg(errp, "NBD server already has export named '%s'", name);
        return NULL;
    }
    size = blk_getlength(common->blk);
    if (size < 0) {
        error_setg_errno(errp, -size, "Failed to determine the NBD export's "
                         "length");
        return NULL;
    }

    exp = g_new0(NBDExport, 1);
    exp->common = common;
    if (!nbd_meta_init_export(exp, allocation_depth, bitmaps, errp)) {
        g_free(exp);
        return NULL;
    }
    exp->name = g_strdup(name);
    exp->description = g_strdup(description);
    exp->size = size;
    exp->multi_conn = multi_conn;
    exp->min_block = MAX(blk_get_request_alignment(common->blk), 1);
    nbd_exports = g_list_append(nbd_exports, exp);
    return exp;
}

uint16_t nbd_export_tx_flags(NBDExport *exp, bool structured_reply,
                             bool shared_server)
{
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;

    if (exp->common->writable) {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                 NBD_FLAG_SEND_FAST_ZERO;
    } else {
        flags |= NBD_FLAG_READ_ONLY;
    }
    if (structured_reply) {
        flags |= NBD_FLAG_SEND_DF;
    }
    if (exp->multi_conn == ON_OFF_AUTO_ON ||
        (exp->multi_conn == ON_OFF_AUTO_AUTO && shared_server)) {
        flags |= NBD_FLAG_CAN_MULTI_CONN;
    }
    return flags;
}

bool nbd_export_attach_client(NBDExport *exp, NBDClient *client)
{
    if (exp->closed) {
        return false;
    }
    blk_exp_ref(exp->common);
    exp->clients = g_list_prepend(exp->clients, client);
    return true;
}

void nbd_export_detach_client(NBDExport *exp, NBDClient *client)
{
    exp->clients = g_list_remove(exp->clients, client);
    blk_exp_unref(exp->common);
}

void nbd_export_close(NBDExport *exp)
{
    if (exp->closed) {
        return;
    }
    exp->closed = true;
    nbd_exports = g_list_remove(nbd_exports, exp);
    for (GList *l = exp->clients; l; l = l->next) {
        nbd_client_kick(l->data);
    }
}

void nbd_export_free(NBDExport *exp)
{
    g_assert(exp->closed);
    g_assert(!exp->clients);
    nbd_meta_free_export(exp);
    g_free(exp->name);
    g_free(exp->description);
    g_free(exp);
}
