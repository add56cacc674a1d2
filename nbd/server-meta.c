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
 *   qemu:dirty-bitmap:NAME one per bitmap the export asked for, in the
 *                          order given
 *
 * Adding a context type means a new NBDMetaKind, an entry appended here
 * at export creation, and a case in nbd_meta_co_extents(); matching and
 * the handshake need no change, since they work on full names and
 * namespace prefixes only.
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
 *   qemu:dirty-bitmap:N   NBD_STATE_DIRTY for dirty granules of bitmap N,
 *                         0 for clean ones.  Extents follow granule
 *                         boundaries except where the request starts and
 *                         ends; past the end of a smaller bitmap (one on
 *                         another node) everything reads clean.
 *
 * An exported bitmap is busy for the life of the export, so that no
 * command or job changes it under a client that reads it; and its node
 * keeps a reference from the export, so that it cannot be deleted.
 */
#include "nbd/nbd-internal.h"
#include "block/bitmap-qmp.h"
#include "block/block-backend.h"
#include "block/block_int.h"

#define NBD_META_BITMAP_PREFIX "qemu:dirty-bitmap:"

static NBDMetaContext *nbd_meta_add(NBDExport *exp, NBDMetaKind kind,
                                    const char *name)
{
    NBDMetaContext *ctx = g_new0(NBDMetaContext, 1);

    ctx->kind = kind;
    ctx->name = g_strdup(name);
    g_ptr_array_add(exp->contexts, ctx);
    return ctx;
}

static void nbd_meta_context_free(gpointer p)
{
    NBDMetaContext *ctx = p;

    if (ctx->bitmap) {
        bdrv_dirty_bitmap_set_busy(ctx->bitmap, false);
        bdrv_unref(bdrv_dirty_bitmap_bs(ctx->bitmap));
    }
    g_free(ctx->name);
    g_free(ctx);
}

/* The node whose data @bs shows where it has none of its own, or NULL. */
static BlockDriverState *nbd_meta_node_below(BlockDriverState *bs)
{
    BlockDriverState *filtered = bdrv_filtered_bs(bs);

    if (filtered) {
        return filtered;
    }
    return bs->backing ? bs->backing->bs : NULL;
}

/*
 * The bitmap that @ref names for @exp, with QEMU's checks and messages:
 * a bare name is searched on the exported node and down its chain, and
 * must not be enabled on a writable node behind a read-only export
 * (whose clients expect the bits to stay as they are); {node, name}
 * names a bitmap on any node.  Read-only bitmaps may be exported.
 */
static BdrvDirtyBitmap *nbd_meta_find_bitmap(NBDExport *exp,
                                             BlockDirtyBitmapOrStr *ref,
                                             Error **errp)
{
    BdrvDirtyBitmap *bitmap = NULL;

    if (ref->type == QTYPE_QDICT) {
        bitmap = block_dirty_bitmap_lookup(ref->u.external.node,
                                           ref->u.external.name, NULL, errp);
        if (!bitmap) {
            return NULL;
        }
    } else {
        for (BlockDriverState *bs = blk_bs(exp->common->blk);
             bs && !bitmap; bs = nbd_meta_node_below(bs)) {
            bitmap = bdrv_find_dirty_bitmap(bs, ref->u.local);
        }
        if (!bitmap) {
            error_setg(errp, "Bitmap '%s' is not found", ref->u.local);
            return NULL;
        }
        if (!exp->common->writable && bdrv_dirty_bitmap_enabled(bitmap) &&
            !bdrv_is_read_only(bdrv_dirty_bitmap_bs(bitmap))) {
            error_setg(errp, "Enabled bitmap '%s' incompatible with "
                       "readonly export", ref->u.local);
            return NULL;
        }
    }
    if (!bdrv_dirty_bitmap_check(bitmap, BDRV_BITMAP_ALLOW_RO, errp)) {
        return NULL;
    }
    return bitmap;
}

bool nbd_meta_init_export(NBDExport *exp, bool allocation_depth,
                          BlockDirtyBitmapOrStrList *bitmaps, Error **errp)
{
    g_autoptr(GPtrArray) found = g_ptr_array_new();

    /* Check them all before any becomes busy: nothing to undo. */
    for (BlockDirtyBitmapOrStrList *l = bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = nbd_meta_find_bitmap(exp, l->value, errp);

        if (!bitmap) {
            return false;
        }
        g_ptr_array_add(found, bitmap);
    }

    exp->contexts = g_ptr_array_new_with_free_func(nbd_meta_context_free);
    nbd_meta_add(exp, NBD_META_BASE_ALLOCATION, "base:allocation");
    if (allocation_depth) {
        nbd_meta_add(exp, NBD_META_ALLOCATION_DEPTH, "qemu:allocation-depth");
    }
    for (guint i = 0; i < found->len; i++) {
        BdrvDirtyBitmap *bitmap = g_ptr_array_index(found, i);
        g_autofree char *name =
            g_strconcat(NBD_META_BITMAP_PREFIX,
                        bdrv_dirty_bitmap_name(bitmap), NULL);
        NBDMetaContext *ctx = nbd_meta_add(exp, NBD_META_DIRTY_BITMAP, name);

        ctx->bitmap = bitmap;
        bdrv_dirty_bitmap_set_busy(bitmap, true);
        bdrv_ref(bdrv_dirty_bitmap_bs(bitmap));
    }
    return true;
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

/*
 * Append an extent of @length bytes with @flags to @extents, merged into
 * the last one if that has the same flags.  Returns false, appending
 * nothing, if that would take more than @max_extents.
 */
static bool nbd_meta_add_extent(GArray *extents, unsigned max_extents,
                                uint64_t length, uint32_t flags)
{
    NBDExtent *last = extents->len > 0
        ? &g_array_index(extents, NBDExtent, extents->len - 1) : NULL;

    if (length == 0) {
        return true;
    }
    if (last && last->flags == flags) {
        /* Cannot overflow: all extents fit in one 32-bit length. */
        last->length += length;
    } else if (extents->len < max_extents) {
        NBDExtent ext = { .length = length, .flags = flags };

        g_array_append_val(extents, ext);
    } else {
        return false;
    }
    return true;
}

/* qemu:dirty-bitmap:NAME: alternating clean and dirty runs. */
static void nbd_meta_bitmap_extents(const HBitmap *bits, uint64_t offset,
                                    uint32_t length, unsigned max_extents,
                                    GArray *extents)
{
    uint64_t end = offset + length;
    uint64_t start, bytes;

    while (hbitmap_next_dirty_area(bits, offset, end, UINT64_MAX,
                                   &start, &bytes)) {
        if (!nbd_meta_add_extent(extents, max_extents, start - offset, 0) ||
            !nbd_meta_add_extent(extents, max_extents, bytes,
                                 NBD_STATE_DIRTY)) {
            return;
        }
        offset = start + bytes;
    }
    nbd_meta_add_extent(extents, max_extents, end - offset, 0);
}

static uint32_t nbd_meta_flags(NBDMetaKind kind, int status, int depth)
{
    switch (kind) {
    case NBD_META_BASE_ALLOCATION:
        return (status & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
               (status & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
    case NBD_META_ALLOCATION_DEPTH:
        return depth;
    case NBD_META_DIRTY_BITMAP:
        break;
    }
    g_assert_not_reached();
}

int coroutine_fn nbd_meta_co_extents(NBDExport *exp,
                                     const NBDMetaContext *ctx,
                                     uint64_t offset, uint32_t length,
                                     unsigned max_extents, GArray *extents)
{
    g_assert(max_extents > 0);

    if (ctx->kind == NBD_META_DIRTY_BITMAP) {
        nbd_meta_bitmap_extents(bdrv_dirty_bitmap_bits(ctx->bitmap), offset,
                                length, max_extents, extents);
        return 0;
    }
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
        if (!nbd_meta_add_extent(extents, max_extents, pnum, flags)) {
            break;
        }
        offset += pnum;
        length -= pnum;
    }
    return 0;
}
