/*
 * NBD meta contexts: what NBD_CMD_BLOCK_STATUS can report.
 *
 * Each export owns a table of the contexts it offers (exp->contexts); a
 * context's id on the wire is its index in that table, so ids are stable
 * for the life of the export and need no allocator.  The table is built
 * once, when the export is created:
 *
 *   base:allocation        always (the protocol's standard context)
 *   qemu:allocation-depth  when the export asked for it
 *
 * Adding a context type (qemu:dirty-bitmap:NAME is next) means a new
 * NBDMetaKind, an entry appended here at export creation, and a case in
 * nbd_meta_co_extents(); matching and the handshake need no change, since
 * they work on full names and namespace prefixes only.
 *
 * Encodings:
 *   base:allocation       NBD_STATE_HOLE when the block layer reports no
 *                         BDRV_BLOCK_DATA (nothing stored: reads come from
 *                         nowhere), NBD_STATE_ZERO when it reports
 *                         BDRV_BLOCK_ZERO (reads return zeroes).
 *   qemu:allocation-depth 0 unallocated in the whole chain, else the
 *                         place in the backing chain of the layer that
 *                         allocates it: 1 the exported node, 2 its
 *                         backing node, and so on.
 */
#include "nbd/nbd-internal.h"
#include "block/block-backend.h"

static void nbd_meta_add(NBDExport *exp, NBDMetaKind kind, const char *name)
{
    NBDMetaContext *ctx = g_new0(NBDMetaContext, 1);

    ctx->kind = kind;
    ctx->name = g_strdup(name);
    g_ptr_array_add(exp->contexts, ctx);
}

static void nbd_meta_context_free(gpointer p)
{
    NBDMetaContext *ctx = p;

    g_free(ctx->name);
    g_free(ctx);
}

void nbd_meta_init_export(NBDExport *exp, bool allocation_depth)
{
    exp->contexts = g_ptr_array_new_with_free_func(nbd_meta_context_free);
    nbd_meta_add(exp, NBD_META_BASE_ALLOCATION, "base:allocation");
    if (allocation_depth) {
        nbd_meta_add(exp, NBD_META_ALLOCATION_DEPTH, "qemu:allocation-depth");
    }
}

void nbd_meta_free_export(NBDExport *exp)
{
    g_ptr_array_unref(exp->contexts);
    exp->contexts = NULL;
}

static bool nbd_meta_has_id(GArray *ids, uint32_t id)
{
    for (guint i = 0; i < ids->len; i++) {
        if (g_array_index(ids, uint32_t, i) == id) {
            return true;
        }
    }
    return false;
}

void nbd_meta_match(NBDExport *exp, const char *query, bool list,
                    GArray *ids)
{
    size_t qlen = strlen(query);
    bool wildcard = list && qlen > 0 && query[qlen - 1] == ':';

    /* Every query must at least name a namespace. */
    if (!strchr(query, ':')) {
        return;
    }
    for (uint32_t id = 0; id < exp->contexts->len; id++) {
        NBDMetaContext *ctx = g_ptr_array_index(exp->contexts, id);
        bool match = wildcard ? !strncmp(ctx->name, query, qlen)
                              : !strcmp(ctx->name, query);

        if (match && !nbd_meta_has_id(ids, id)) {
            g_array_append_val(ids, id);
        }
    }
}

static uint32_t nbd_meta_flags(NBDMetaKind kind, int status, int depth)
{
    switch (kind) {
    case NBD_META_BASE_ALLOCATION:
        return (status & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
               (status & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
    case NBD_META_ALLOCATION_DEPTH:
        return depth;
    }
    g_assert_not_reached();
}

int coroutine_fn nbd_meta_co_extents(NBDExport *exp,
                                     const NBDMetaContext *ctx,
                                     uint64_t offset, uint32_t length,
                                     unsigned max_extents, GArray *extents)
{
    g_assert(max_extents > 0);

    while (length > 0) {
        int64_t pnum = 0;
        int depth;
        int ret = blk_co_block_status(exp->common->blk, offset, length,
                                      &pnum, &depth);
        uint32_t flags;

        if (ret < 0) {
            return ret;
        }
        g_assert(pnum > 0 && pnum <= length);
        flags = nbd_meta_flags(ctx->kind, ret, depth);

        if (extents->len > 0 &&
            g_array_index(extents, NBDExtent, extents->len - 1).flags ==
            flags) {
            /* Cannot overflow: all extents fit in one 32-bit length. */
            g_array_index(extents, NBDExtent, extents->len - 1).length +=
                pnum;
        } else if (extents->len < max_extents) {
            NBDExtent ext = { .length = pnum, .flags = flags };

            g_array_append_val(extents, ext);
        } else {
            break;
        }
        offset += pnum;
        length -= pnum;
    }
    return 0;
}
