/*
 * Persistent bitmaps stored in a qcow2 image: the internal API the
 * dirty-bitmap layer builds on.  Storage only: these calls read and
 * write the "bitmaps" header extension, the bitmap directory, bitmap
 * tables and bitmap data clusters of an open qcow2 node; nothing here
 * tracks guest writes.
 *
 * In-memory representation: a plain bit array, least significant bit
 * first within each byte (the on-disk order).  Bit i covers the virtual
 * disk bytes [i * granularity, (i + 1) * granularity); a bitmap of a
 * disk of S bytes has DIV_ROUND_UP(S, granularity) bits, and the bits
 * past the last one in the final byte are zero.
 *
 * Flags: "auto" means the bitmap records writes while the image is in
 * use (an enabled bitmap); "in_use" means the stored contents cannot be
 * trusted (a program had the bitmap open for tracking and did not store
 * it back).  See docs/devel/qcow2.rst, "Persistent bitmaps", for when
 * the driver sets and clears in_use.
 *
 * Context: the coroutine_fn calls take the qcow2 metadata lock and may
 * yield; qcow2_list_bitmaps() is main-loop only and does not yield.
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

/*
 * qcow2_load_bitmap:
 * @bs: a qcow2 node
 * @name: the bitmap
 * @bits: set to a newly allocated bit array (g_free)
 * @nbits: set to its length in bits
 * @granularity: set to its granularity in bytes
 *
 * Read the stored contents of bitmap @name.  Fails if the bitmap does
 * not exist, or if its in_use flag was set by an earlier user of the
 * image (the contents are inconsistent; only removal is possible).  A
 * bitmap this node flagged in_use itself at open is read as stored at
 * open: guest writes since then are not in it.  Every bitmap table
 * entry is checked before it is trusted.
 */
bool coroutine_fn qcow2_load_bitmap(BlockDriverState *bs, const char *name,
                                    uint8_t **bits, uint64_t *nbits,
                                    uint32_t *granularity, Error **errp);

/*
 * qcow2_store_bitmap:
 * @bs: a qcow2 node opened read/write, qcow2 version 3
 * @name: 1 to 1023 bytes
 * @bits: @nbits bits, which must be DIV_ROUND_UP(disk size, @granularity)
 * @granularity: a power of two from 512 to 2^31
 * @auto_enabled: store the "auto" flag (the bitmap records writes)
 *
 * Create bitmap @name, or replace the one of that name, with @bits.
 * New clusters are allocated for the data and the bitmap table (chunks
 * that are all zeroes or all ones become table entries 0 and 1), and a
 * new directory is written and flushed before the header extension
 * points to it; the old directory and the replaced bitmap's clusters
 * are freed afterwards, so a crash at any point leaves either the old
 * or the new bitmap, at worst with leaked clusters.
 *
 * An auto bitmap is stored with in_use set while the image stays open
 * read/write (writes from now on are not recorded in it); the flag is
 * cleared at close if the image was not written after the store.
 * Invalidates the Qcow2StoredBitmap lists returned earlier.
 */
bool coroutine_fn qcow2_store_bitmap(BlockDriverState *bs, const char *name,
                                     const uint8_t *bits, uint64_t nbits,
                                     uint32_t granularity, bool auto_enabled,
                                     Error **errp);

/*
 * qcow2_remove_bitmap:
 * @bs: a qcow2 node opened read/write
 * @name: the bitmap to remove (in_use or not)
 *
 * Remove bitmap @name from the directory (crash-safely, as a store) and
 * free its clusters.  Removing the last bitmap removes the header
 * extension.
 */
bool coroutine_fn qcow2_remove_bitmap(BlockDriverState *bs, const char *name,
                                      Error **errp);

#endif /* BLOCK_QCOW2_BITMAP_H */
