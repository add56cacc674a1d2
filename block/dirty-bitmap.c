/*
 * Dirty bitmaps on nodes: the object model, the checks, write marking,
 * transactional clear and merge, and the successor protocol.  Storage
 * in images is the driver's business (qcow2-bitmap.c); the QMP commands
 * are in block/monitor/bitmap-qmp.c.
 */
#include "block/dirty-bitmap.h"
#include "block/block_int.h"

struct BdrvDirtyBitmap {
    BlockDriverState *bs;
    HBitmap *bits;
    char *name;                     /* NULL: anonymous */
    /* Set while a job holds the bitmap frozen; anonymous, on bs too. */
    BdrvDirtyBitmap *successor;
    bool disabled;
    bool busy;
    bool readonly;
    bool persistent;
    bool inconsistent;
    bool skip_store;
};

enum {
    DEFAULT_GRANULARITY_MIN = 4096,
    DEFAULT_GRANULARITY_MAX = 65536,
};

/*
 * Recompute what every write asks of the bitmaps of @bs (see
 * BlockDriverState): the write path then reads an array and a flag
 * instead of walking the list and testing each bitmap.  Called after
 * every change of the list, of a bitmap's disabled or readonly state,
 * or of the HBitmap it points to.
 */
static void dirty_bitmaps_changed(BlockDriverState *bs)
{
    unsigned n = 0;

    g_clear_pointer(&bs->enabled_bits, g_free);
    bs->has_readonly_bitmaps = false;
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;

        n += !bitmap->disabled;
        bs->has_readonly_bitmaps |= bitmap->readonly;
    }
    bs->n_enabled_bits = n;
    if (n == 0) {
        return;
    }
    bs->enabled_bits = g_new(HBitmap *, n);
    n = 0;
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;

        if (!bitmap->disabled) {
            bs->enabled_bits[n++] = bitmap->bits;
        }
    }
}

BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockDriverState *bs,
                                          uint32_t granularity,
                                          const char *name, Error **errp)
{
    BdrvDirtyBitmap *bitmap;

    if (name) {
        if (bdrv_find_dirty_bitmap(bs, name)) {
            error_setg(errp, "Bitmap already exists: %s", name);
            return NULL;
        }
        if (strlen(name) > BDRV_BITMAP_MAX_NAME) {
            error_setg(errp, "Bitmap name too long: %s", name);
            return NULL;
        }
    }
    bitmap = g_new0(BdrvDirtyBitmap, 1);
    bitmap->bs = bs;
    bitmap->bits = hbitmap_new(bs->total_bytes, granularity);
    bitmap->name = g_strdup(name);
    bs->dirty_bitmaps = g_list_prepend(bs->dirty_bitmaps, bitmap);
    dirty_bitmaps_changed(bs);
    return bitmap;
}

void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bitmap)
{
    BlockDriverState *bs = bitmap->bs;

    if (bitmap->successor) {
        bdrv_release_dirty_bitmap(bitmap->successor);
    }
    bs->dirty_bitmaps = g_list_remove(bs->dirty_bitmaps, bitmap);
    dirty_bitmaps_changed(bs);
    hbitmap_free(bitmap->bits);
    g_free(bitmap->name);
    g_free(bitmap);
}

void bdrv_release_all_dirty_bitmaps(BlockDriverState *bs)
{
    while (bs->dirty_bitmaps) {
        BdrvDirtyBitmap *bitmap = bs->dirty_bitmaps->data;

        /* A successor goes with its parent, wherever it is listed. */
        for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
            BdrvDirtyBitmap *other = l->data;

            if (other->successor == bitmap) {
                bitmap = other;
                break;
            }
        }
        bdrv_release_dirty_bitmap(bitmap);
    }
}

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockDriverState *bs,
                                        const char *name)
{
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;

        if (bitmap->name && !strcmp(bitmap->name, name)) {
            return bitmap;
        }
    }
    return NULL;
}

GList *bdrv_dirty_bitmaps(BlockDriverState *bs)
{
    return bs->dirty_bitmaps;
}

uint32_t bdrv_default_bitmap_granularity(BlockDriverState *bs)
{
    BlockDriverInfo bdi;

    if (bdrv_get_info(bs, &bdi) >= 0 && bdi.cluster_size > 0) {
        return MIN(MAX(bdi.cluster_size, DEFAULT_GRANULARITY_MIN),
                   DEFAULT_GRANULARITY_MAX);
    }
    return DEFAULT_GRANULARITY_MAX;
}

bool bdrv_dirty_bitmap_check(const BdrvDirtyBitmap *bitmap,
                             unsigned flags, Error **errp)
{
    if ((flags & BDRV_BITMAP_BUSY) && bitmap->busy) {
        error_setg(errp, "Bitmap '%s' is currently in use by another "
                   "operation and cannot be used", bitmap->name);
        return false;
    }
    if ((flags & BDRV_BITMAP_RO) && bitmap->readonly) {
        error_setg(errp, "Bitmap '%s' is readonly and cannot be modified",
                   bitmap->name);
        return false;
    }
    if ((flags & BDRV_BITMAP_INCONSISTENT) && bitmap->inconsistent) {
        error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used",
                   bitmap->name);
        error_append_hint(errp, "Try block-dirty-bitmap-remove to delete "
                          "this bitmap from disk\n");
        return false;
    }
    return true;
}

const char *bdrv_dirty_bitmap_name(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->name;
}

BlockDriverState *bdrv_dirty_bitmap_bs(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->bs;
}

uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bitmap)
{
    return hbitmap_granularity(bitmap->bits);
}

uint64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bitmap)
{
    return hbitmap_size(bitmap->bits);
}

uint64_t bdrv_dirty_bitmap_count(const BdrvDirtyBitmap *bitmap)
{
    return hbitmap_count(bitmap->bits);
}

const HBitmap *bdrv_dirty_bitmap_bits(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->bits;
}

bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bitmap)
{
    return !bitmap->disabled;
}

bool bdrv_dirty_bitmap_recording(const BdrvDirtyBitmap *bitmap)
{
    return !bitmap->disabled ||
           (bitmap->successor && !bitmap->successor->disabled);
}

bool bdrv_dirty_bitmap_busy(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->busy;
}

bool bdrv_dirty_bitmap_readonly(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->readonly;
}

bool bdrv_dirty_bitmap_persistent(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->persistent;
}

bool bdrv_dirty_bitmap_inconsistent(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->inconsistent;
}

bool bdrv_dirty_bitmap_has_successor(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->successor != NULL;
}

void bdrv_enable_dirty_bitmap(BdrvDirtyBitmap *bitmap)
{
    bitmap->disabled = false;
    dirty_bitmaps_changed(bitmap->bs);
}

void bdrv_disable_dirty_bitmap(BdrvDirtyBitmap *bitmap)
{
    bitmap->disabled = true;
    dirty_bitmaps_changed(bitmap->bs);
}

void bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bitmap, bool busy)
{
    bitmap->busy = busy;
}

void bdrv_dirty_bitmap_set_readonly(BdrvDirtyBitmap *bitmap, bool readonly)
{
    bitmap->readonly = readonly;
    dirty_bitmaps_changed(bitmap->bs);
}

void bdrv_dirty_bitmap_set_persistence(BdrvDirtyBitmap *bitmap,
                                       bool persistent)
{
    bitmap->persistent = persistent;
}

void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bitmap)
{
    bitmap->inconsistent = true;
    bitmap->disabled = true;
    bitmap->persistent = true;
    dirty_bitmaps_changed(bitmap->bs);
}

void bdrv_dirty_bitmap_skip_store(BdrvDirtyBitmap *bitmap, bool skip)
{
    bitmap->skip_store = skip;
}

bool bdrv_dirty_bitmap_get_skip_store(const BdrvDirtyBitmap *bitmap)
{
    return bitmap->skip_store;
}

void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bitmap, int64_t offset,
                           int64_t bytes)
{
    hbitmap_set(bitmap->bits, offset, bytes);
}

void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bitmap, int64_t offset,
                             int64_t bytes)
{
    hbitmap_reset(bitmap->bits, offset, bytes);
}

void bdrv_dirty_bitmap_deserialize_part(BdrvDirtyBitmap *bitmap,
                                        const uint8_t *buf, uint64_t start,
                                        uint64_t len)
{
    hbitmap_deserialize_part(bitmap->bits, buf, start, len);
}

void bdrv_set_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    hbitmap_set_many(bs->enabled_bits, bs->n_enabled_bits, offset, bytes);
}

void bdrv_dirty_bitmaps_truncate(BlockDriverState *bs, int64_t size)
{
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;

        hbitmap_truncate(bitmap->bits, size);
    }
}

bool bdrv_has_readonly_bitmaps(BlockDriverState *bs)
{
    return bs->has_readonly_bitmaps;
}

void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bitmap, HBitmap **backup)
{
    if (!backup) {
        hbitmap_reset_all(bitmap->bits);
        return;
    }
    *backup = bitmap->bits;
    bitmap->bits = hbitmap_new(hbitmap_size(*backup),
                               hbitmap_granularity(*backup));
    dirty_bitmaps_changed(bitmap->bs);
}

bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dest,
                             const BdrvDirtyBitmap *src, HBitmap **backup,
                             Error **errp)
{
    uint64_t dest_size = hbitmap_size(dest->bits);
    uint64_t src_size = hbitmap_size(src->bits);

    if (dest_size != src_size) {
        error_setg(errp, "Bitmaps are of different sizes (destination size "
                   "is %" PRIu64 ", source size is %" PRIu64 ") and can't "
                   "be merged", dest_size, src_size);
        return false;
    }
    if (backup) {
        *backup = hbitmap_copy(dest->bits);
    }
    hbitmap_merge(dest->bits, src->bits);
    return true;
}

void bdrv_restore_dirty_bitmap(BdrvDirtyBitmap *bitmap, HBitmap *backup)
{
    hbitmap_free(bitmap->bits);
    bitmap->bits = backup;
    dirty_bitmaps_changed(bitmap->bs);
}

/* --- The successor protocol --- */

bool bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bitmap,
                                        Error **errp)
{
    BdrvDirtyBitmap *successor;

    if (bitmap->successor) {
        error_setg(errp, "Cannot create a successor for a bitmap that "
                   "already has one");
        return false;
    }
    successor = bdrv_create_dirty_bitmap(bitmap->bs,
                                         hbitmap_granularity(bitmap->bits),
                                         NULL, errp);
    if (!successor) {
        return false;
    }
    successor->disabled = bitmap->disabled;
    bitmap->successor = successor;
    bitmap->disabled = true;
    bitmap->busy = true;
    dirty_bitmaps_changed(bitmap->bs);
    return true;
}

/* The successor leaves its parent's care and is unlinked from it. */
static BdrvDirtyBitmap *take_successor(BdrvDirtyBitmap *bitmap)
{
    BdrvDirtyBitmap *successor = bitmap->successor;

    bitmap->successor = NULL;
    return successor;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bitmap)
{
    BdrvDirtyBitmap *successor = take_successor(bitmap);

    successor->name = g_steal_pointer(&bitmap->name);
    successor->persistent = bitmap->persistent;
    bdrv_release_dirty_bitmap(bitmap);
    return successor;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bitmap)
{
    BdrvDirtyBitmap *successor = take_successor(bitmap);

    /* Both were made for the same node: sizes always match. */
    hbitmap_merge(bitmap->bits, successor->bits);
    bitmap->disabled = successor->disabled;
    bitmap->busy = false;
    bdrv_release_dirty_bitmap(successor);   /* updates the write path */
    return bitmap;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_end_job(BdrvDirtyBitmap *bitmap,
                                           BitmapSyncMode mode,
                                           bool success,
                                           const HBitmap *remaining)
{
    switch (mode) {
    case BITMAP_SYNC_MODE_ON_SUCCESS:
        return success ? bdrv_dirty_bitmap_abdicate(bitmap)
                       : bdrv_dirty_bitmap_reclaim(bitmap);
    case BITMAP_SYNC_MODE_NEVER:
        return bdrv_dirty_bitmap_reclaim(bitmap);
    case BITMAP_SYNC_MODE_ALWAYS:
        bitmap = bdrv_dirty_bitmap_abdicate(bitmap);
        if (!success && remaining) {
            hbitmap_merge(bitmap->bits, remaining);
        }
        return bitmap;
    default:
        g_assert_not_reached();
    }
}

/* --- Persistence --- */

bool bdrv_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                     uint32_t granularity, Error **errp)
{
    if (!bs->drv->bdrv_can_store_new_dirty_bitmap) {
        error_setg_errno(errp, ENOTSUP, "Can't store persistent bitmaps to "
                         "%s", bs->node_name);
        return false;
    }
    return bs->drv->bdrv_can_store_new_dirty_bitmap(bs, name, granularity,
                                                    errp);
}

bool coroutine_fn bdrv_co_remove_persistent_dirty_bitmap(BlockDriverState *bs,
                                                         const char *name,
                                                         Error **errp)
{
    if (!bs->drv->bdrv_co_remove_persistent_dirty_bitmap) {
        error_setg_errno(errp, ENOTSUP, "Can't remove persistent bitmaps "
                         "from %s", bs->node_name);
        return false;
    }
    return bs->drv->bdrv_co_remove_persistent_dirty_bitmap(bs, name, errp);
}

bool coroutine_fn bdrv_co_make_dirty_bitmap_crash_safe(BdrvDirtyBitmap *bitmap,
                                                       Error **errp)
{
    BlockDriverState *bs = bitmap->bs;

    g_assert(bitmap->persistent);
    if (!bs->drv->bdrv_co_make_dirty_bitmap_crash_safe) {
        error_setg_errno(errp, ENOTSUP, "Can't store crash-safe bitmaps to "
                         "%s", bs->node_name);
        return false;
    }
    return bs->drv->bdrv_co_make_dirty_bitmap_crash_safe(bs, bitmap, errp);
}

int coroutine_fn bdrv_co_dirty_bitmaps_before_write(BlockDriverState *bs,
                                                    int64_t offset,
                                                    int64_t bytes)
{
    if (!bs->dirty_bitmaps || !bs->drv->bdrv_co_before_dirty_write) {
        return 0;
    }
    return bs->drv->bdrv_co_before_dirty_write(bs, offset, bytes);
}

int coroutine_fn bdrv_co_cover_dirty_bitmap(BdrvDirtyBitmap *bitmap)
{
    BlockDriverState *bs = bitmap->bs;

    if (!bitmap->persistent || !bs->drv->bdrv_co_cover_dirty_bitmap) {
        return 0;
    }
    return bs->drv->bdrv_co_cover_dirty_bitmap(bs, bitmap);
}

/* --- Queries --- */

BlockDirtyInfoList *bdrv_query_dirty_bitmaps(BlockDriverState *bs)
{
    BlockDirtyInfoList *list = NULL;
    BlockDirtyInfoList **tail = &list;

    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;
        BlockDirtyInfo *info = g_new0(BlockDirtyInfo, 1);

        info->name = g_strdup(bitmap->name);
        info->count = hbitmap_count(bitmap->bits);
        info->granularity = hbitmap_granularity(bitmap->bits);
        info->recording = bdrv_dirty_bitmap_recording(bitmap);
        info->busy = bitmap->busy;
        info->persistent = bitmap->persistent;
        info->has_inconsistent = bitmap->inconsistent;
        info->inconsistent = bitmap->inconsistent;
        *tail = g_new0(BlockDirtyInfoList, 1);
        (*tail)->value = info;
        tail = &(*tail)->next;
    }
    return list;
}
