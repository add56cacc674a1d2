/*
 * qcow2 crash-surviving persistent bitmaps (a blockd extension; the
 * user's view is in docs/interop/bitmaps.rst, the on-disk extension in
 * docs/devel/qcow2.rst).
 *
 * A normal persistent bitmap is flagged in_use while the image is open
 * and stored exactly at clean close, so any crash loses it.  A
 * crash-safe bitmap is never flagged: its stored copy is kept a
 * superset of the in-memory bits at every moment, the way md's
 * write-intent bitmap works.  The unit of that superset is a region of
 * CRASH_SAFE_REGION_MIN bytes of the disk, or 8 granules if that is
 * more (region_size()).  A region is always whole bytes of bitmap data,
 * so marking it is a blind write of 0xff bytes, never a read-modify-
 * write of bits; 1 MiB keeps the extra cost to one flush per MiB first
 * written (and a crash adds at most 1 MiB per written region to the
 * next incremental backup).
 *
 * Invariant, per crash-safe bitmap: every region set in `intent` has all
 * its bits set in the stored copy, flushed; the stored copy holds every
 * bit the bitmap had when it was stored (at add, or at clean close).
 * qcow2_co_before_dirty_write() runs before every write, write-zeroes
 * and discard: a request that reaches a region not yet in `intent`
 * (while the bitmap records writes) adds it to `pending` and waits for
 * mark_lock; the holder writes the bits of every pending region to the
 * bitmap's data clusters, flushes once, and only then sets them in
 * `intent` (group commit: the requests that queued during one flush
 * share the next).  A request whose regions a batch covered finds them
 * in `intent` and proceeds; concurrent requests to one region cause one
 * update.  A write into marked regions costs a lookup and takes no
 * lock.  s->lock is held only while bitmap data is written, not during
 * the flush, so other I/O of the node goes on meanwhile.  Bits added
 * otherwise (a merge) are covered by qcow2_co_cover_dirty_bitmap() the
 * same way.  Clearing the bitmap leaves the stored copy larger, which
 * is allowed.
 *
 * Marking a region whose data cluster is not allocated (table entry 0)
 * allocates one: the new cluster (zeroes and the region's bits) and its
 * refcount are written and flushed first, then the 8-byte table entry
 * is rewritten in place (one sector, atomic), then flushed.  A crash in
 * between leaks a cluster at worst.  An entry of 1 (all ones) already
 * covers everything.
 *
 * Which stored bitmaps are crash-safe is recorded by name in a header
 * extension of blockd's (QCOW2_EXT_BLOCKD_CRASH_SAFE: a run of big-
 * endian u16 length + name, in the extension's exact length).  At open
 * read/write, a listed bitmap found consistent is not flagged in_use and
 * is tracked again with an empty `intent`.  QEMU keeps unknown
 * extensions and treats such a bitmap as an ordinary one.  A malformed
 * extension is ignored (its bitmaps are then flagged like any other).
 *
 * Context: coroutines of the main loop; the state is protected by
 * mark_lock (see Qcow2CrashSafe), except that the lock-free check of
 * qcow2_co_before_dirty_write() reads `intent` and adds to `pending`
 * (no yield in between: the main loop is one thread).
 */
#include "block/qcow2/qcow2.h"
#include "block/dirty-bitmap.h"

enum {
    CRASH_SAFE_REGION_MIN = 1 << 20,
};

typedef struct CrashSafeBitmap {
    char *name;
    uint64_t region;                /* bytes of disk per region */
    HBitmap *intent;                /* one bit per region marked on disk */
    HBitmap *pending;               /* regions requests wait for */
    uint64_t *table;                /* host order; NULL until first read */
} CrashSafeBitmap;

/*
 * Lock order: mark_lock, then BDRVQcow2State.lock.  mark_lock protects
 * `tracked` (and each CrashSafeBitmap) against removal while a mark is
 * in progress, and serialises the marks.
 */
struct Qcow2CrashSafe {
    GPtrArray *listed;              /* names (char *) in the extension */
    GPtrArray *tracked;             /* CrashSafeBitmap * */
    CoMutex mark_lock;
};

static uint64_t region_size(uint32_t granularity)
{
    return MAX((uint64_t)granularity * 8, CRASH_SAFE_REGION_MIN);
}

static void crash_safe_bitmap_free(CrashSafeBitmap *t)
{
    g_free(t->name);
    hbitmap_free(t->intent);
    hbitmap_free(t->pending);
    g_free(t->table);
    g_free(t);
}

static Qcow2CrashSafe *get_state(BDRVQcow2State *s)
{
    if (!s->crash_safe) {
        s->crash_safe = g_new0(Qcow2CrashSafe, 1);
        s->crash_safe->listed = g_ptr_array_new_with_free_func(g_free);
        s->crash_safe->tracked = g_ptr_array_new_with_free_func(
            (GDestroyNotify)crash_safe_bitmap_free);
        co_mutex_init(&s->crash_safe->mark_lock);
    }
    return s->crash_safe;
}

void qcow2_crash_safe_free(BDRVQcow2State *s)
{
    if (s->crash_safe) {
        g_ptr_array_unref(s->crash_safe->listed);
        g_ptr_array_unref(s->crash_safe->tracked);
        g_free(s->crash_safe);
        s->crash_safe = NULL;
    }
}

static int find_tracked(Qcow2CrashSafe *cs, const char *name)
{
    for (guint i = 0; cs && i < cs->tracked->len; i++) {
        if (!strcmp(((CrashSafeBitmap *)cs->tracked->pdata[i])->name,
                    name)) {
            return i;
        }
    }
    return -1;
}

void coroutine_fn qcow2_crash_safe_lock(BlockDriverState *bs)
{
    co_mutex_lock(&get_state(bs->opaque)->mark_lock);
}

void qcow2_crash_safe_unlock(BlockDriverState *bs)
{
    co_mutex_unlock(&get_state(bs->opaque)->mark_lock);
}

void qcow2_crash_safe_read_ext(BlockDriverState *bs, const uint8_t *data,
                               uint32_t len)
{
    Qcow2CrashSafe *cs = get_state(bs->opaque);
    uint32_t pos = 0;

    g_ptr_array_set_size(cs->listed, 0);
    while (pos < len) {
        uint16_t n = pos + 2 <= len ? qcow2_get_be16(data + pos) : 0;

        if (n == 0 || n > len - pos - 2) {
            warn_report("qcow2: '%s': ignoring a malformed crash-safe "
                        "bitmaps extension", bs->filename);
            g_ptr_array_set_size(cs->listed, 0);
            return;
        }
        g_ptr_array_add(cs->listed,
                        g_strndup((const char *)data + pos + 2, n));
        pos += 2 + n;
    }
}

static CrashSafeBitmap *track(BlockDriverState *bs, const char *name,
                              uint32_t granularity)
{
    CrashSafeBitmap *t = g_new0(CrashSafeBitmap, 1);

    t->name = g_strdup(name);
    t->region = region_size(granularity);
    t->intent = hbitmap_new(DIV_ROUND_UP((uint64_t)bs->total_bytes,
                                         t->region), 1);
    t->pending = hbitmap_new(hbitmap_size(t->intent), 1);
    g_ptr_array_add(get_state(bs->opaque)->tracked, t);
    return t;
}

bool qcow2_crash_safe_track(BlockDriverState *bs, const char *name)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CrashSafe *cs = s->crash_safe;
    const Qcow2BitmapEntry *e = qcow2_bitmaps_find(s, name);

    if (!cs || !e) {
        return false;
    }
    if (find_tracked(cs, name) >= 0) {
        return true;            /* read/write again after read-only */
    }
    for (guint i = 0; i < cs->listed->len; i++) {
        if (!strcmp(cs->listed->pdata[i], name)) {
            track(bs, name, 1U << e->granularity_bits);
            return true;
        }
    }
    return false;
}

/*
 * Write the extension listing the tracked bitmaps (dropped if there are
 * none), and flush.  Called with s->lock held.
 */
static int coroutine_fn write_ext(BlockDriverState *bs, Error **errp)
{
    Qcow2CrashSafe *cs = get_state(bs->opaque);
    g_autoptr(GByteArray) data = g_byte_array_new();
    int ret;

    for (guint i = 0; i < cs->tracked->len; i++) {
        const char *name = ((CrashSafeBitmap *)cs->tracked->pdata[i])->name;
        uint8_t len[2];

        qcow2_put_be16(len, strlen(name));
        g_byte_array_append(data, len, 2);
        g_byte_array_append(data, (const uint8_t *)name, strlen(name));
    }
    ret = qcow2_rewrite_header_extension(bs, QCOW2_EXT_BLOCKD_CRASH_SAFE,
                                         data->len ? data->data : NULL,
                                         data->len, errp);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not flush the header");
        }
    }
    return ret;
}

bool coroutine_fn qcow2_co_make_dirty_bitmap_crash_safe(BlockDriverState *bs,
                                                        BdrvDirtyBitmap *bitmap,
                                                        Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *name = bdrv_dirty_bitmap_name(bitmap);
    int ret;

    qcow2_crash_safe_lock(bs);
    co_mutex_lock(&s->lock);
    /* Stored first: a crash before the extension names it is harmless. */
    ret = qcow2_bitmaps_store_new(bs, bitmap, errp);
    if (ret == 0) {
        track(bs, name, bdrv_dirty_bitmap_granularity(bitmap));
        ret = write_ext(bs, errp);
        if (ret < 0) {
            g_ptr_array_remove_index(s->crash_safe->tracked,
                                     find_tracked(s->crash_safe, name));
        }
    }
    co_mutex_unlock(&s->lock);
    qcow2_crash_safe_unlock(bs);
    if (ret < 0) {
        error_prepend(errp, "Can't make bitmap '%s' crash-safe in '%s': ",
                      name, bs->node_name);
        if (qcow2_bitmaps_find(s, name)) {
            qcow2_co_remove_persistent_dirty_bitmap(bs, name, NULL);
        }
        return false;
    }
    return true;
}

void coroutine_fn qcow2_crash_safe_forget(BlockDriverState *bs,
                                          const char *name)
{
    BDRVQcow2State *s = bs->opaque;
    int i = find_tracked(s->crash_safe, name);
    Error *local_err = NULL;

    if (i < 0) {
        return;
    }
    g_ptr_array_remove_index(s->crash_safe->tracked, i);
    /* Failing leaves a stale name, which is harmless. */
    if (write_ext(bs, &local_err) < 0) {
        warn_report("%s", error_get_pretty(local_err));
        error_free(local_err);
    }
}

void qcow2_crash_safe_stored(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    for (guint i = 0; s->crash_safe && i < s->crash_safe->tracked->len; i++) {
        CrashSafeBitmap *t = s->crash_safe->tracked->pdata[i];

        /* Exact bits, in new clusters now: nothing is marked any more. */
        hbitmap_reset_all(t->intent);
        g_clear_pointer(&t->table, g_free);
    }
}

/*
 * Set bytes [@start, +@len) of data cluster @c of @t's stored copy to
 * 0xff, the last one to @last.  Called with s->lock held.
 */
static int coroutine_fn mark_bytes(BlockDriverState *bs, CrashSafeBitmap *t,
                                   const Qcow2BitmapEntry *e, uint64_t c,
                                   uint64_t start, uint64_t len, uint8_t last)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *buf = g_malloc0(s->cluster_size);
    uint64_t entry = t->table[c];
    uint64_t be;
    int64_t off;
    int ret;

    if (entry == QCOW2_BME_TABLE_ALL_ONES) {
        return 0;
    }
    memset(buf + start, 0xff, len);
    buf[start + len - 1] = last;
    if (entry) {
        return qcow2_write_metadata(bs, QCOW2_MD_NONE,
                                    (entry & QCOW2_BME_TABLE_OFFSET_MASK) +
                                    start, len, buf + start);
    }
    off = qcow2_alloc_clusters(bs, 1);
    if (off < 0) {
        return off;
    }
    ret = qcow2_write_metadata(bs, QCOW2_MD_NONE, off, s->cluster_size, buf);
    if (ret == 0) {
        ret = qcow2_cache_write(s->refcount_cache);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        /* The table does not point to it yet. */
        qcow2_free_clusters(bs, off, s->cluster_size, false);
        return ret;
    }
    be = GUINT64_TO_BE((uint64_t)off);
    ret = qcow2_write_metadata(bs, QCOW2_MD_BITMAP_TABLE,
                               e->table_offset + c * 8, 8, &be);
    if (ret == 0) {
        t->table[c] = off;
    }
    return ret;
}

/*
 * Set every bit of regions [@r0, @r1) in @t's stored copy (no flush).
 * Called with mark_lock held; takes s->lock.
 */
static int coroutine_fn mark_regions(BlockDriverState *bs, CrashSafeBitmap *t,
                                     uint64_t r0, uint64_t r1)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2BitmapEntry *e;
    uint64_t granularity, nbits, bit0, bit1, byte0, byte1;
    int ret = 0;

    co_mutex_lock(&s->lock);
    e = qcow2_bitmaps_find(s, t->name);
    if (!e) {
        co_mutex_unlock(&s->lock);
        return -EIO;
    }
    granularity = 1ULL << e->granularity_bits;
    nbits = DIV_ROUND_UP((uint64_t)bs->total_bytes, granularity);
    bit0 = r0 * (t->region / granularity);
    bit1 = MIN(r1 * (t->region / granularity), nbits);
    byte0 = bit0 / 8;
    byte1 = DIV_ROUND_UP(bit1, 8);
    if (!t->table) {
        Error *local_err = NULL;

        t->table = qcow2_bitmap_read_table(bs, e, &local_err);
        if (!t->table) {
            error_report_err(local_err);
            ret = -EIO;
        }
    }
    for (uint64_t c = byte0 / s->cluster_size;
         ret == 0 && c * s->cluster_size < byte1; c++) {
        uint64_t lo = MAX(byte0, c * s->cluster_size);
        uint64_t hi = MIN(byte1, (c + 1) * s->cluster_size);
        /* The bits past the end of the disk stay zero. */
        uint8_t last = hi == byte1 && bit1 % 8 ? (1U << (bit1 % 8)) - 1
                                               : 0xff;

        ret = c < e->table_size
              ? mark_bytes(bs, t, e, c, lo - c * s->cluster_size, hi - lo,
                           last)
              : -EIO;
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* The regions of [@offset, +@bytes) of the disk: [*@r0, *@r1). */
static bool regions_of(BlockDriverState *bs, const CrashSafeBitmap *t,
                       uint64_t offset, uint64_t bytes,
                       uint64_t *r0, uint64_t *r1)
{
    uint64_t end = MIN(offset + bytes, (uint64_t)bs->total_bytes);

    if (offset >= end) {
        return false;
    }
    *r0 = offset / t->region;
    *r1 = DIV_ROUND_UP(end, t->region);
    return true;
}

/*
 * Does a write of [@offset, +@bytes) have to widen the stored @t?  If
 * so, and @want, the regions are added to the pending ones.
 */
static bool needs_cover(BlockDriverState *bs, CrashSafeBitmap *t,
                        uint64_t offset, uint64_t bytes, bool want)
{
    BdrvDirtyBitmap *bitmap = bdrv_find_dirty_bitmap(bs, t->name);
    uint64_t r0, r1;

    if (!bitmap || !bdrv_dirty_bitmap_recording(bitmap) ||
        !regions_of(bs, t, offset, bytes, &r0, &r1) ||
        hbitmap_next_clean(t->intent, r0, r1 - r0) < 0) {
        return false;
    }
    if (want) {
        hbitmap_set(t->pending, r0, r1 - r0);
    }
    return true;
}

/*
 * Group commit: write every pending region of every tracked bitmap,
 * flush once, and only then mark them in `intent`.  Requests that
 * queued behind the lock while the previous batch was written are all
 * served by one flush.  Called with mark_lock held.
 */
static int coroutine_fn mark_pending(BlockDriverState *bs)
{
    Qcow2CrashSafe *cs = get_state(bs->opaque);
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(uint64_t) * 3);
    int ret = 0;

    for (guint i = 0; i < cs->tracked->len && ret == 0; i++) {
        CrashSafeBitmap *t = cs->tracked->pdata[i];
        uint64_t start = 0, len = 0;

        while (ret == 0 &&
               hbitmap_next_dirty_area(t->pending, start + len,
                                       hbitmap_size(t->pending), INT64_MAX,
                                       &start, &len)) {
            uint64_t run[3] = { i, start, len };

            ret = mark_regions(bs, t, start, start + len);
            g_array_append_val(runs, run);
        }
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    for (guint j = 0; ret == 0 && j < runs->len; j++) {
        const uint64_t *run = &g_array_index(runs, uint64_t, j * 3);
        CrashSafeBitmap *t = cs->tracked->pdata[run[0]];

        hbitmap_set(t->intent, run[1], run[2]);
        hbitmap_reset(t->pending, run[1], run[2]);
    }
    return ret;
}

int coroutine_fn qcow2_co_before_dirty_write(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CrashSafe *cs = s->crash_safe;
    bool needed = false;
    int ret = 0;

    for (guint i = 0; cs && i < cs->tracked->len; i++) {
        needed |= needs_cover(bs, cs->tracked->pdata[i], offset, bytes, true);
    }
    if (!needed) {
        return 0;
    }
    qcow2_crash_safe_lock(bs);
    /*
     * Look again: an earlier batch may have covered us, and a failed
     * one or a removal may have dropped our pending regions.
     */
    needed = false;
    for (guint i = 0; i < cs->tracked->len; i++) {
        needed |= needs_cover(bs, cs->tracked->pdata[i], offset, bytes, true);
    }
    if (needed) {
        ret = mark_pending(bs);
    }
    qcow2_crash_safe_unlock(bs);
    return ret;
}

int coroutine_fn qcow2_co_cover_dirty_bitmap(BlockDriverState *bs,
                                             BdrvDirtyBitmap *bitmap)
{
    BDRVQcow2State *s = bs->opaque;
    const HBitmap *bits = bdrv_dirty_bitmap_bits(bitmap);
    uint64_t start = 0, len = 0;
    CrashSafeBitmap *t;
    int ret = 0;
    int i;

    qcow2_crash_safe_lock(bs);
    i = find_tracked(s->crash_safe, bdrv_dirty_bitmap_name(bitmap));
    if (i >= 0) {
        t = s->crash_safe->tracked->pdata[i];
        while (hbitmap_next_dirty_area(bits, start + len, hbitmap_size(bits),
                                       INT64_MAX, &start, &len)) {
            uint64_t r0, r1;

            if (regions_of(bs, t, start, len, &r0, &r1)) {
                hbitmap_set(t->pending, r0, r1 - r0);
            }
        }
        ret = mark_pending(bs);
    }
    qcow2_crash_safe_unlock(bs);
    return ret;
}
