/*
 * The persistent bitmaps stored in a qcow2 image, as the directory on
 * disk lists them (for image info and tests).  The bitmaps themselves
 * live in memory as BdrvDirtyBitmaps (block/dirty-bitmap.h): the driver
 * loads them at open and stores them at close.
 *
 * Flags: "auto" means the bitmap records writes while the image is in
 * use (an enabled bitmap); "in_use" means the stored contents cannot be
 * trusted (a program had the bitmap open for tracking and did not store
 * it back).  See docs/devel/qcow2.rst, "Persistent bitmaps", for when
 * the driver sets and clears in_use.
 *
 * Context: main loop; nothing here yields.
 */
#ifndef BLOCK_QCOW2_BITMAP_H
#define BLOCK_QCOW2_BITMAP_H

#include "block/block_int.h"

/* QEMU's limits, enforced on load and store. */
#define QCOW2_BITMAP_MAX_NAME           1023
#define QCOW2_BITMAP_MIN_GRANULARITY    (1U << 9)
#define QCOW2_BITMAP_MAX_GRANULARITY    (1U << 31)
#define QCOW2_BITMAP_MAX_COUNT          65535
#define QCOW2_BITMAP_MAX_DIR_SIZE       (1024ULL * QCOW2_BITMAP_MAX_COUNT)

typedef struct Qcow2StoredBitmap {
    char *name;
    uint32_t granularity;           /* bytes per bit */
    bool in_use;                    /* stored contents inconsistent */
    bool auto_enabled;              /* "auto" flag: records writes */
} Qcow2StoredBitmap;

void qcow2_stored_bitmap_free(Qcow2StoredBitmap *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Qcow2StoredBitmap, qcow2_stored_bitmap_free)

/*
 * qcow2_list_bitmaps:
 * @bs: any node
 *
 * The bitmaps stored in @bs, in directory order, as a list of newly
 * allocated Qcow2StoredBitmap (free with
 * g_list_free_full(list, (GDestroyNotify)qcow2_stored_bitmap_free)).
 * NULL if @bs is not a qcow2 node or has no (valid) bitmaps.  in_use is
 * reported as it is on disk, so it includes the flag the driver sets
 * itself on auto bitmaps while the image is open read/write.
 */
GList *qcow2_list_bitmaps(BlockDriverState *bs);

#endif /* BLOCK_QCOW2_BITMAP_H */
