/*
 * The QMP commands on dirty bitmaps: block-dirty-bitmap-add, -remove,
 * -clear, -enable, -disable, -merge and x-debug-block-dirty-bitmap-sha256,
 * with QEMU 7.2's checks and messages.  The transaction actions of the
 * same names (transaction.c) share the lookups and checks here.
 */
#include "block/bitmap-qmp.h"
#include "block/block_int.h"
#include "qapi/qapi-commands.h"

BdrvDirtyBitmap *block_dirty_bitmap_lookup(const char *node,
                                           const char *name,
                                           BlockDriverState **pbs,
                                           Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node);
    BdrvDirtyBitmap *bitmap;

    if (!bs) {
        error_setg(errp, "Node '%s' not found", node);
        return NULL;
    }
    bitmap = bdrv_find_dirty_bitmap(bs, name);
    if (!bitmap) {
        error_setg(errp, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    if (pbs) {
        *pbs = bs;
    }
    return bitmap;
}

BdrvDirtyBitmap *coroutine_fn block_dirty_bitmap_add(BlockDirtyBitmapAdd *args,
                                                     Error **errp)
{
    BlockDriverState *bs = bdrv_lookup_bs(args->node, args->node, errp);
    uint32_t granularity;
    BdrvDirtyBitmap *bitmap;

    if (!bs) {
        return NULL;
    }
    if (!args->name[0]) {
        error_setg(errp, "Bitmap name cannot be empty");
        return NULL;
    }
    if (args->has_granularity) {
        granularity = args->granularity;
        if (granularity < BDRV_BITMAP_MIN_GRANULARITY ||
            (granularity & (granularity - 1))) {
            error_setg(errp, "Granularity must be power of 2 and at least "
                       "512");
            return NULL;
        }
    } else {
        granularity = bdrv_default_bitmap_granularity(bs);
    }
    if (args->__org_blockd_crash_safe && !args->persistent) {
        error_setg(errp, "'__org.blockd_crash-safe' requires 'persistent'");
        return NULL;
    }
    if (args->persistent &&
        !bdrv_can_store_new_dirty_bitmap(bs, args->name, granularity,
                                         errp)) {
        return NULL;
    }
    bitmap = bdrv_create_dirty_bitmap(bs, granularity, args->name, errp);
    if (!bitmap) {
        return NULL;
    }
    if (args->disabled) {
        bdrv_disable_dirty_bitmap(bitmap);
    }
    bdrv_dirty_bitmap_set_persistence(bitmap, args->persistent);
    if (args->__org_blockd_crash_safe &&
        !bdrv_co_make_dirty_bitmap_crash_safe(bitmap, errp)) {
        bdrv_release_dirty_bitmap(bitmap);
        return NULL;
    }
    return bitmap;
}

void qmp_block_dirty_bitmap_add(const char *node, const char *name,
                                bool has_granularity, uint32_t granularity,
                                bool has_persistent, bool persistent,
                                bool has_disabled, bool disabled,
                                bool has___org_blockd_crash_safe,
                                bool __org_blockd_crash_safe,
                                Error **errp)
{
    BlockDirtyBitmapAdd args = {
        .node = (char *)node,
        .name = (char *)name,
        .has_granularity = has_granularity,
        .granularity = granularity,
        .has_persistent = has_persistent,
        .persistent = persistent,
        .has_disabled = has_disabled,
        .disabled = disabled,
        .has___org_blockd_crash_safe = has___org_blockd_crash_safe,
        .__org_blockd_crash_safe = __org_blockd_crash_safe,
    };

    block_dirty_bitmap_add(&args, errp);
}

BdrvDirtyBitmap *coroutine_fn block_dirty_bitmap_remove(const char *node,
                                                        const char *name,
                                                        bool release,
                                                        Error **errp)
{
    BlockDriverState *bs;
    BdrvDirtyBitmap *bitmap = block_dirty_bitmap_lookup(node, name, &bs,
                                                        errp);

    if (!bitmap ||
        !bdrv_dirty_bitmap_check(bitmap,
                                 BDRV_BITMAP_BUSY | BDRV_BITMAP_RO, errp)) {
        return NULL;
    }
    if (bdrv_dirty_bitmap_persistent(bitmap) &&
        !bdrv_co_remove_persistent_dirty_bitmap(bs, name, errp)) {
        return NULL;
    }
    if (release) {
        bdrv_release_dirty_bitmap(bitmap);
    }
    return bitmap;
}

void coroutine_fn qmp_block_dirty_bitmap_remove(const char *node,
                                                const char *name,
                                                Error **errp)
{
    block_dirty_bitmap_remove(node, name, true, errp);
}

BdrvDirtyBitmap *block_dirty_bitmap_lookup_checked(const char *node,
                                                   const char *name,
                                                   unsigned checks,
                                                   Error **errp)
{
    BdrvDirtyBitmap *bitmap = block_dirty_bitmap_lookup(node, name, NULL,
                                                        errp);

    if (!bitmap || !bdrv_dirty_bitmap_check(bitmap, checks, errp)) {
        return NULL;
    }
    return bitmap;
}

void qmp_block_dirty_bitmap_clear(const char *node, const char *name,
                                  Error **errp)
{
    BdrvDirtyBitmap *bitmap =
        block_dirty_bitmap_lookup_checked(node, name, BDRV_BITMAP_DEFAULT,
                                          errp);

    if (bitmap) {
        bdrv_clear_dirty_bitmap(bitmap, NULL);
    }
}

void qmp_block_dirty_bitmap_enable(const char *node, const char *name,
                                   Error **errp)
{
    BdrvDirtyBitmap *bitmap =
        block_dirty_bitmap_lookup_checked(node, name, BDRV_BITMAP_ALLOW_RO,
                                          errp);

    if (bitmap) {
        bdrv_enable_dirty_bitmap(bitmap);
    }
}

void qmp_block_dirty_bitmap_disable(const char *node, const char *name,
                                    Error **errp)
{
    BdrvDirtyBitmap *bitmap =
        block_dirty_bitmap_lookup_checked(node, name, BDRV_BITMAP_ALLOW_RO,
                                          errp);

    if (bitmap) {
        bdrv_disable_dirty_bitmap(bitmap);
    }
}

BdrvDirtyBitmap *coroutine_fn
block_dirty_bitmap_merge(const char *node, const char *target,
                         BlockDirtyBitmapOrStrList *bitmaps,
                         HBitmap **backup, Error **errp)
{
    BlockDriverState *bs;
    BdrvDirtyBitmap *dest = block_dirty_bitmap_lookup(node, target, &bs,
                                                      errp);
    HBitmap *before = NULL;
    int ret;

    if (!dest || !bdrv_dirty_bitmap_check(dest, BDRV_BITMAP_DEFAULT, errp)) {
        return NULL;
    }
    for (BlockDirtyBitmapOrStrList *l = bitmaps; l; l = l->next) {
        BlockDirtyBitmapOrStr *ref = l->value;
        BdrvDirtyBitmap *src;

        if (ref->type == QTYPE_QSTRING) {
            src = bdrv_find_dirty_bitmap(bs, ref->u.local);
            if (!src) {
                error_setg(errp, "Dirty bitmap '%s' not found", ref->u.local);
            }
        } else {
            src = block_dirty_bitmap_lookup(ref->u.external.node,
                                            ref->u.external.name, NULL,
                                            errp);
        }
        if (!src || !bdrv_dirty_bitmap_check(src, BDRV_BITMAP_ALLOW_RO, errp) ||
            !bdrv_merge_dirty_bitmap(dest, src, before ? NULL : &before,
                                     errp)) {
            /* Nothing of a failed merge stays in the target. */
            if (before) {
                bdrv_restore_dirty_bitmap(dest, before);
            }
            return NULL;
        }
    }
    ret = bdrv_co_cover_dirty_bitmap(dest);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not store the merged bits of "
                         "crash-safe bitmap '%s'", target);
        if (before) {
            bdrv_restore_dirty_bitmap(dest, before);
        }
        return NULL;
    }
    if (backup) {
        *backup = before ? before : hbitmap_copy(bdrv_dirty_bitmap_bits(dest));
    } else {
        hbitmap_free(before);
    }
    return dest;
}

void qmp_block_dirty_bitmap_merge(const char *node, const char *target,
                                  BlockDirtyBitmapOrStrList *bitmaps,
                                  Error **errp)
{
    block_dirty_bitmap_merge(node, target, bitmaps, NULL, errp);
}

BlockDirtyBitmapSha256 *
qmp_x_debug_block_dirty_bitmap_sha256(const char *node, const char *name,
                                      Error **errp)
{
    BdrvDirtyBitmap *bitmap = block_dirty_bitmap_lookup(node, name, NULL,
                                                        errp);
    BlockDirtyBitmapSha256 *ret;

    if (!bitmap) {
        return NULL;
    }
    ret = g_new0(BlockDirtyBitmapSha256, 1);
    ret->sha256 = hbitmap_sha256(bdrv_dirty_bitmap_bits(bitmap));
    return ret;
}

/* --- The changes map (blockd extension) --- */

enum {
    DIRTY_EXTENTS_DEFAULT_MAX = 65536,
};

/*
 * The bits to report: the one bitmap itself, or the union of several
 * in a new bitmap at the finest of their granularities (*@owned).
 */
static const HBitmap *dirty_extents_source(const char *node,
                                           strList *names, HBitmap **owned,
                                           Error **errp)
{
    const HBitmap *first = NULL;
    g_autoptr(GPtrArray) sources = g_ptr_array_new();
    uint32_t finest = UINT32_MAX;

    if (!names) {
        error_setg(errp, "Parameter 'bitmaps' must name at least one "
                   "bitmap");
        return NULL;
    }
    for (strList *l = names; l; l = l->next) {
        BdrvDirtyBitmap *bitmap =
            block_dirty_bitmap_lookup_checked(node, l->value,
                                              BDRV_BITMAP_INCONSISTENT, errp);

        if (!bitmap) {
            return NULL;
        }
        first = first ? first : bdrv_dirty_bitmap_bits(bitmap);
        finest = MIN(finest, bdrv_dirty_bitmap_granularity(bitmap));
        g_ptr_array_add(sources, (gpointer)bdrv_dirty_bitmap_bits(bitmap));
    }
    if (sources->len == 1) {
        return first;
    }
    *owned = hbitmap_new(hbitmap_size(first), finest);
    for (guint i = 0; i < sources->len; i++) {
        hbitmap_merge(*owned, sources->pdata[i]);
    }
    return *owned;
}

__org_blockd_DirtyExtents *
qmp___org_blockd_query_dirty_extents(const char *node, strList *bitmaps,
                                     bool has_offset, uint64_t offset,
                                     bool has_max_extents,
                                     uint32_t max_extents, Error **errp)
{
    g_autoptr(HBitmap) owned = NULL;
    const HBitmap *bits = dirty_extents_source(node, bitmaps, &owned, errp);
    __org_blockd_DirtyExtents *ret;
    __org_blockd_DirtyExtentList **tail;
    uint64_t size, start, len;
    uint32_t found = 0;

    if (!bits) {
        return NULL;
    }
    max_extents = has_max_extents ? max_extents : DIRTY_EXTENTS_DEFAULT_MAX;
    if (max_extents == 0) {
        error_setg(errp, "Parameter 'max-extents' expects a number of at "
                   "least 1");
        return NULL;
    }
    size = hbitmap_size(bits);
    offset = has_offset ? offset : 0;
    ret = g_new0(__org_blockd_DirtyExtents, 1);
    ret->granularity = hbitmap_granularity(bits);
    ret->dirty_bytes = hbitmap_count(bits);
    tail = &ret->extents;
    while (offset < size &&
           hbitmap_next_dirty_area(bits, offset, size, size - offset,
                                   &start, &len)) {
        __org_blockd_DirtyExtent *extent;

        if (found == max_extents) {
            ret->has_next_offset = true;
            ret->next_offset = start;
            break;
        }
        extent = g_new0(__org_blockd_DirtyExtent, 1);
        extent->offset = start;
        extent->length = len;
        *tail = g_new0(__org_blockd_DirtyExtentList, 1);
        (*tail)->value = extent;
        tail = &(*tail)->next;
        found++;
        offset = start + len;
    }
    return ret;
}
