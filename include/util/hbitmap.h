/*
 * A hierarchical bitmap over a byte range, one bit per granule: the
 * data structure under dirty bitmaps (block/dirty-bitmap.c), block-copy
 * and the NBD qemu:dirty-bitmap context.
 *
 * Offsets and lengths are in bytes of the range covered (a disk's
 * virtual size); bit i stands for the bytes [i * granularity,
 * (i + 1) * granularity).  The bottom level holds the bits in 64-bit
 * words; each level above has one bit per word of the level below, set
 * when that word is non-zero, so searches skip clean areas a whole
 * upper-level word (64 × 64 granules) at a time.
 *
 * Not thread-safe: main loop and its coroutines only.  Nothing here
 * yields.
 */
#ifndef UTIL_HBITMAP_H
#define UTIL_HBITMAP_H

#include "util/osdep.h"

typedef struct HBitmap HBitmap;

/*
 * hbitmap_new:
 * @size: the bytes covered (may be 0)
 * @granularity: bytes per bit, a power of two (checked by the caller)
 *
 * A new, clean bitmap of MAX(DIV_ROUND_UP(@size, @granularity), 1) bits.
 */
HBitmap *hbitmap_new(uint64_t size, uint32_t granularity);
void hbitmap_free(HBitmap *hb);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HBitmap, hbitmap_free)

/* An independent copy of @hb, bits included. */
HBitmap *hbitmap_copy(const HBitmap *hb);

uint64_t hbitmap_size(const HBitmap *hb);
uint32_t hbitmap_granularity(const HBitmap *hb);

/*
 * Mark dirty every granule that [@offset, @offset + @bytes) touches
 * (rounded outwards).  The range is clipped to the size.
 */
void hbitmap_set(HBitmap *hb, uint64_t offset, uint64_t bytes);

/*
 * hbitmap_set() of one range on each of the @n bitmaps @hbs: a write
 * marking the enabled bitmaps of its node.  One call for all of them;
 * the range in granules is worked out once for each run of bitmaps of
 * the same size and granularity, so a bitmap whose granules are dirty
 * already costs a load and a test.
 */
void hbitmap_set_many(HBitmap *const *hbs, unsigned n, uint64_t offset,
                      uint64_t bytes);

/*
 * Mark clean every granule that [@offset, @offset + @bytes) covers
 * entirely; the last granule counts as covered when the range reaches
 * the end of the bitmap.  A partly covered granule stays dirty, so a
 * reset never loses a write it did not see.
 */
void hbitmap_reset(HBitmap *hb, uint64_t offset, uint64_t bytes);

/* Mark every granule clean. */
void hbitmap_reset_all(HBitmap *hb);

/* Is the granule holding byte @offset dirty?  (@offset < size) */
bool hbitmap_get(const HBitmap *hb, uint64_t offset);

/*
 * Dirty bytes, counted in whole granules (QEMU's "count": a dirty last
 * granule counts fully, so this can exceed the size).  O(1).
 */
uint64_t hbitmap_count(const HBitmap *hb);

bool hbitmap_is_empty(const HBitmap *hb);

/*
 * The start of the first dirty granule in [@offset, @offset + @bytes)
 * (@bytes clipped to the size), as an offset no smaller than @offset;
 * -1 if there is none.
 */
int64_t hbitmap_next_dirty(const HBitmap *hb, uint64_t offset,
                           uint64_t bytes);

/* The same for the first clean granule. */
int64_t hbitmap_next_clean(const HBitmap *hb, uint64_t offset,
                           uint64_t bytes);

/*
 * hbitmap_next_dirty_area:
 * Find the first run of dirty granules that starts in [@offset, @end)
 * (@end clipped to the size).  On success, *@area_start is its start
 * (no smaller than @offset) and *@area_bytes its length, cut at @end
 * and at @max_bytes (> 0).  Returns false if [@offset, @end) is clean.
 * Iterating over all dirty extents: call again from
 * *@area_start + *@area_bytes.
 */
bool hbitmap_next_dirty_area(const HBitmap *hb, uint64_t offset,
                             uint64_t end, uint64_t max_bytes,
                             uint64_t *area_start, uint64_t *area_bytes);

/*
 * hbitmap_merge:
 * @dst |= @src.  Both must cover the same size (the caller checks and
 * reports); granularities may differ: a dirty granule of @src marks
 * every granule of @dst that overlaps it.
 */
void hbitmap_merge(HBitmap *dst, const HBitmap *src);

/*
 * Change the bytes covered to @size: growing adds clean granules,
 * shrinking drops the bits past the new end.
 */
void hbitmap_truncate(HBitmap *hb, uint64_t size);

/*
 * Serialization in the qcow2 on-disk bitmap layout: bit i of the array
 * is granule i, least significant bit first within each byte, and the
 * bits past the last granule in the final byte are zero.
 *
 * hbitmap_serialized_bytes: DIV_ROUND_UP(number of granules, 8).
 * hbitmap_serialize_part: copy the @len bytes of the array that start
 * at byte @start into @buf (@start + @len <= serialized bytes).
 * hbitmap_deserialize_part: replace those bits with @buf's (the bits of
 * @buf past the last granule are ignored).
 * Chunks let callers (qcow2 store and load, one cluster at a time) work
 * without a second copy of a large bitmap.
 */
uint64_t hbitmap_serialized_bytes(const HBitmap *hb);
void hbitmap_serialize_part(const HBitmap *hb, uint8_t *buf,
                            uint64_t start, uint64_t len);
void hbitmap_deserialize_part(HBitmap *hb, const uint8_t *buf,
                              uint64_t start, uint64_t len);

/*
 * The SHA-256, as lowercase hex (g_free), of the bottom level as QEMU
 * lays it out for x-debug-block-dirty-bitmap-sha256: the bits in
 * little-endian 64-bit words, DIV_ROUND_UP(granules, 64) words.  Two
 * bitmaps with equal bits and equal granularity hash alike, here and in
 * qemu-storage-daemon on x86_64.
 */
char *hbitmap_sha256(const HBitmap *hb);

#endif /* UTIL_HBITMAP_H */
