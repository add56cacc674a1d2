/*
 * Dirty bitmaps on nodes: which parts of a node were written since a
 * point in time.  The object model, the checks that QMP commands, jobs
 * and exports make, and the successor protocol that keeps a failed
 * backup from losing dirty bits.  block/dirty-bitmap.c; docs/devel/
 * bitmaps.rst explains the model.
 *
 * A bitmap belongs to one node and is named uniquely on it, or is
 * anonymous (internal: a backup job's successor, block-copy's copy
 * map).  Every write, write-zeroes and discard that reaches the node
 * marks its enabled bitmaps, failed requests included (a failed write
 * may have changed part of its range).
 *
 * Main loop and its coroutines only.
 */
#ifndef BLOCK_DIRTY_BITMAP_H
#define BLOCK_DIRTY_BITMAP_H

#include "block/block-common.h"
#include "qapi/qapi-types.h"
#include "util/hbitmap.h"

/* QEMU's limits. */
#define BDRV_BITMAP_MAX_NAME            1023
#define BDRV_BITMAP_MIN_GRANULARITY     512
#define BDRV_BITMAP_MAX_GRANULARITY     (1U << 31)

/*
 * What a user of a bitmap refuses (bdrv_dirty_bitmap_check): a bitmap
 * in use by a job or an export, a read-only one (loaded from a read-only
 * image), an inconsistent one (found in_use after an unclean stop).
 */
typedef enum BdrvBitmapCheck {
    BDRV_BITMAP_BUSY = 1 << 0,
    BDRV_BITMAP_RO = 1 << 1,
    BDRV_BITMAP_INCONSISTENT = 1 << 2,
    BDRV_BITMAP_DEFAULT = BDRV_BITMAP_BUSY | BDRV_BITMAP_RO |
                          BDRV_BITMAP_INCONSISTENT,
    /* Readers: merge sources, exports, backup with bitmap-mode=never. */
    BDRV_BITMAP_ALLOW_RO = BDRV_BITMAP_BUSY | BDRV_BITMAP_INCONSISTENT,
} BdrvBitmapCheck;

/*
 * bdrv_create_dirty_bitmap:
 * @granularity: a power of two of at least 512 (the caller checks)
 * @name: NULL for an anonymous bitmap
 *
 * A new, clean, enabled bitmap covering @bs's length, listed first on
 * @bs (query order is newest first).  Fails with QEMU's messages if
 * @name is taken or too long.
 */
BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockDriverState *bs,
                                          uint32_t granularity,
                                          const char *name, Error **errp);
/* Forget @bitmap and its successor; nothing is written to the image. */
void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bitmap);
/* Release every bitmap of @bs (the node is closing). */
void bdrv_release_all_dirty_bitmaps(BlockDriverState *bs);

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockDriverState *bs,
                                        const char *name);
/* @bs's bitmaps, newest first (GList of BdrvDirtyBitmap *, not a copy). */
GList *bdrv_dirty_bitmaps(BlockDriverState *bs);

/*
 * The bitmap granularity a new bitmap on @bs gets by default: the
 * node's cluster size, clamped to [4 KiB, 64 KiB]; 64 KiB if unknown.
 */
uint32_t bdrv_default_bitmap_granularity(BlockDriverState *bs);

/*
 * Refuse, with QEMU's message, a bitmap that has one of the properties
 * in @flags (BdrvBitmapCheck).
 */
bool bdrv_dirty_bitmap_check(const BdrvDirtyBitmap *bitmap,
                             unsigned flags, Error **errp);

const char *bdrv_dirty_bitmap_name(const BdrvDirtyBitmap *bitmap);
BlockDriverState *bdrv_dirty_bitmap_bs(const BdrvDirtyBitmap *bitmap);
uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bitmap);
uint64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bitmap);
/* Dirty bytes in whole granules, as query-named-block-nodes counts. */
uint64_t bdrv_dirty_bitmap_count(const BdrvDirtyBitmap *bitmap);
/* The bits, for readers (NBD export, changes map, block-copy). */
const HBitmap *bdrv_dirty_bitmap_bits(const BdrvDirtyBitmap *bitmap);

bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bitmap);
/* Enabled, or has an enabled successor (QMP's "recording"). */
bool bdrv_dirty_bitmap_recording(const BdrvDirtyBitmap *bitmap);
bool bdrv_dirty_bitmap_busy(const BdrvDirtyBitmap *bitmap);
bool bdrv_dirty_bitmap_readonly(const BdrvDirtyBitmap *bitmap);
bool bdrv_dirty_bitmap_persistent(const BdrvDirtyBitmap *bitmap);
bool bdrv_dirty_bitmap_inconsistent(const BdrvDirtyBitmap *bitmap);
/* Has a successor: a job holds the bitmap frozen. */
bool bdrv_dirty_bitmap_has_successor(const BdrvDirtyBitmap *bitmap);

void bdrv_enable_dirty_bitmap(BdrvDirtyBitmap *bitmap);
void bdrv_disable_dirty_bitmap(BdrvDirtyBitmap *bitmap);
void bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bitmap, bool busy);
void bdrv_dirty_bitmap_set_readonly(BdrvDirtyBitmap *bitmap, bool readonly);
void bdrv_dirty_bitmap_set_persistence(BdrvDirtyBitmap *bitmap,
                                       bool persistent);
/* Found in_use on disk: also disables and makes it persistent. */
void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bitmap);
/* The image copy was removed (transaction remove): do not store it. */
void bdrv_dirty_bitmap_skip_store(BdrvDirtyBitmap *bitmap, bool skip);
bool bdrv_dirty_bitmap_get_skip_store(const BdrvDirtyBitmap *bitmap);

/* Mark or clear bytes directly (jobs, loading from an image). */
void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bitmap, int64_t offset,
                           int64_t bytes);
void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bitmap, int64_t offset,
                             int64_t bytes);

/* Replace bits from their serialized form (hbitmap_deserialize_part). */
void bdrv_dirty_bitmap_deserialize_part(BdrvDirtyBitmap *bitmap,
                                        const uint8_t *buf, uint64_t start,
                                        uint64_t len);

/*
 * bdrv_set_dirty:
 * A write, write-zeroes or discard of [@offset, +@bytes) reached @bs
 * (done or failed): mark every enabled bitmap of @bs.  Called by io.c.
 */
void bdrv_set_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes);

/* @bs now has @size bytes: every bitmap of @bs (growing ones clean). */
void bdrv_dirty_bitmaps_truncate(BlockDriverState *bs, int64_t size);

/*
 * Does @bs hold a read-only bitmap?  Then writes to it fail with EPERM:
 * a bitmap that cannot record them would silently go stale.
 */
bool bdrv_has_readonly_bitmaps(BlockDriverState *bs);

/*
 * Transactional clear and merge.  Each changes @bitmap and, if @backup
 * is not NULL, hands the previous bits to *@backup; the caller later
 * either frees them (hbitmap_free: commit) or puts them back with
 * bdrv_restore_dirty_bitmap (abort).
 */
void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bitmap, HBitmap **backup);
/*
 * @dest |= @src.  Both must have the same size (QEMU's message
 * otherwise); granularities may differ.  The caller checks @dest with
 * BDRV_BITMAP_DEFAULT and @src with BDRV_BITMAP_ALLOW_RO.
 */
bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dest,
                             const BdrvDirtyBitmap *src, HBitmap **backup,
                             Error **errp);
void bdrv_restore_dirty_bitmap(BdrvDirtyBitmap *bitmap, HBitmap *backup);

/*
 * The successor protocol (docs/devel/bitmaps.rst).
 *
 * bdrv_dirty_bitmap_create_successor: freeze @bitmap for a job.  New
 * writes go to an anonymous successor with the same granularity and
 * @bitmap's enabled state; @bitmap becomes disabled and busy, a
 * manifest of the writes before the job.
 * bdrv_dirty_bitmap_abdicate: the job is done with the old bits: the
 * successor takes @bitmap's place (name, persistence) and holds only the
 * writes since the freeze; returns it.
 * bdrv_dirty_bitmap_reclaim: the job failed: @bitmap |= successor, it
 * takes the successor's enabled state and is usable again; returns it.
 */
bool bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bitmap,
                                        Error **errp);
BdrvDirtyBitmap *bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bitmap);
BdrvDirtyBitmap *bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bitmap);

/*
 * bdrv_dirty_bitmap_end_job:
 * Apply a backup job's bitmap-mode to @bitmap (frozen with a successor)
 * when the job ends, successful or not (QEMU's table, reference §2.2):
 * on-success abdicates on success and reclaims otherwise; never always
 * reclaims; always abdicates and, on failure, adds @remaining (the
 * clusters the job did not copy; NULL: none).  Returns the bitmap that
 * now carries the name.
 */
BdrvDirtyBitmap *bdrv_dirty_bitmap_end_job(BdrvDirtyBitmap *bitmap,
                                           BitmapSyncMode mode,
                                           bool success,
                                           const HBitmap *remaining);

/*
 * Persistence, through the driver (NULL callbacks: it cannot store
 * bitmaps, "Can't store persistent bitmaps to NODE").
 * bdrv_can_store_new_dirty_bitmap: may a new bitmap @name of
 * @granularity become persistent on @bs?  Nothing is written: persistent
 * bitmaps are stored when the node closes.
 * bdrv_co_remove_persistent_dirty_bitmap: delete the stored copy of
 * @name from the image now (absent: nothing to do).
 */
bool bdrv_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                     uint32_t granularity, Error **errp);
bool coroutine_fn bdrv_co_remove_persistent_dirty_bitmap(BlockDriverState *bs,
                                                         const char *name,
                                                         Error **errp);

/*
 * Crash-surviving persistent bitmaps (docs/interop/bitmaps.rst), a
 * blockd extension.  The driver keeps the stored copy of such a bitmap
 * a superset of its bits at every moment the image is open, so a crash
 * leaves a consistent (if larger) bitmap instead of an in_use one.
 *
 * bdrv_co_make_dirty_bitmap_crash_safe: store persistent @bitmap in the
 * image now, consistent, and keep it so ("Can't store crash-safe
 * bitmaps to NODE" if the driver cannot).
 * bdrv_co_dirty_bitmaps_before_write: io.c calls it before a write,
 * write-zeroes or discard of [@offset, +@bytes) reaches @bs; the stored
 * copies then cover that range.  -errno fails the request: a write the
 * stored bitmap could not cover must not happen.
 * bdrv_co_cover_dirty_bitmap: @bitmap got bits other than from writes
 * (merge): make its stored copy cover them.  Nothing to do for bitmaps
 * that are not crash-safe.
 */
bool coroutine_fn bdrv_co_make_dirty_bitmap_crash_safe(BdrvDirtyBitmap *bitmap,
                                                       Error **errp);
int coroutine_fn bdrv_co_dirty_bitmaps_before_write(BlockDriverState *bs,
                                                    int64_t offset,
                                                    int64_t bytes);
int coroutine_fn bdrv_co_cover_dirty_bitmap(BdrvDirtyBitmap *bitmap);

/* query-named-block-nodes' dirty-bitmaps; NULL if @bs has none. */
BlockDirtyInfoList *bdrv_query_dirty_bitmaps(BlockDriverState *bs);

#endif /* BLOCK_DIRTY_BITMAP_H */
