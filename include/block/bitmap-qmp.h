/*
 * Lookups and actions shared by the dirty-bitmap QMP commands
 * (block/monitor/bitmap-qmp.c) and the transaction actions of the same
 * names (block/monitor/transaction.c).  Each reports failure with
 * QEMU's message and changes nothing then.
 */
#ifndef BLOCK_BITMAP_QMP_H
#define BLOCK_BITMAP_QMP_H

#include "block/dirty-bitmap.h"

/* Bitmap @name of node @node ("Node ... not found", "Dirty bitmap ..."). */
BdrvDirtyBitmap *block_dirty_bitmap_lookup(const char *node,
                                           const char *name,
                                           BlockDriverState **pbs,
                                           Error **errp);
/* The same, refusing a bitmap with one of the properties in @checks. */
BdrvDirtyBitmap *block_dirty_bitmap_lookup_checked(const char *node,
                                                   const char *name,
                                                   unsigned checks,
                                                   Error **errp);

/*
 * block-dirty-bitmap-add: returns the new bitmap.  A crash-safe one is
 * already stored in the image.
 */
BdrvDirtyBitmap *coroutine_fn block_dirty_bitmap_add(BlockDirtyBitmapAdd *args,
                                                     Error **errp);
/*
 * block-dirty-bitmap-remove: the stored copy of a persistent bitmap is
 * deleted from the image now; the bitmap itself is released only if
 * @release (a transaction releases it at commit).
 */
BdrvDirtyBitmap *coroutine_fn block_dirty_bitmap_remove(const char *node,
                                                        const char *name,
                                                        bool release,
                                                        Error **errp);
/*
 * block-dirty-bitmap-merge: returns the target; *@backup (if not NULL)
 * receives its bits from before, for bdrv_restore_dirty_bitmap().
 */
BdrvDirtyBitmap *coroutine_fn
block_dirty_bitmap_merge(const char *node, const char *target,
                         BlockDirtyBitmapOrStrList *bitmaps,
                         HBitmap **backup, Error **errp);

#endif /* BLOCK_BITMAP_QMP_H */
