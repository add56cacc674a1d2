/*
 * qcow2 persistent bitmaps: the "bitmaps" header extension, the bitmap
 * directory, bitmap tables and data clusters (storage only; nothing here
 * tracks guest writes yet).  The directory's byte encoding and its
 * checks live in qcow2-bitmap-dir.c.
 *
 * On disk (qcow2 specification, "Bitmaps extension"): the extension
 * (type 0x23852875, 24 bytes: nb_bitmaps, reserved, directory size,
 * directory offset) is valid only while autoclear bit 0 is set.  The
 * directory is a run of 8-byte aligned entries (table offset, table
 * size, flags, type, granularity bits, name size, extra data size, name)
 * in whole clusters.  A bitmap table has one u64 per cluster of bitmap
 * data: a data cluster offset, or 0 (all zeroes) / 1 (all ones).  Data
 * bits are in disk order, least significant bit first in each byte.
 *
 * Open: the extension and the whole directory are checked before they
 * are trusted (QEMU's limits: at most 65535 bitmaps, a directory of at
 * most 64 MiB, names of 1 to 1023 bytes, granularity 2^9..2^31, type 1,
 * no extra data, no reserved flag, tables aligned, inside the file and
 * large enough for the disk).  A damaged extension or directory fails
 * the open, as in QEMU: nothing else may be written safely into an image
 * whose bitmap clusters are unknown.  An extension without the autoclear
 * bit (a program unaware of bitmaps wrote the image) is ignored, as the
 * specification says; storing a bitmap later replaces it, leaking the
 * clusters it used.
 *
 * Loaded at open: every stored bitmap becomes a BdrvDirtyBitmap of the
 * node (block/dirty-bitmap.c), as QEMU does it: one stored with in_use
 * is inconsistent (its data is not read; only removal is possible), the
 * others are read, enabled if they have the "auto" flag, and read-only
 * if the image is.  Read/write, in_use is then set on every bitmap
 * loaded, in one directory write before any guest write can happen, so
 * a crash leaves them flagged.  At clean close every persistent,
 * consistent, writable bitmap is stored back (in_use cleared, "auto" if
 * it records writes), again in one directory write.  A persistent
 * bitmap removed over QMP leaves the directory at once.
 *
 * Crash safety of every directory change (flags, store, remove): the new
 * bitmap data, bitmap table and directory go into newly allocated
 * clusters; their refcounts and contents are flushed before the header
 * extension is changed; old clusters are freed only afterwards.  The
 * extension's 24 bytes are rewritten in place with one write (qemu-img
 * puts them inside one sector).  Adding or removing the extension itself
 * rewrites the extension area of the header cluster in one write, as
 * QEMU does with its whole header; the autoclear bit is set only after
 * the extension points to a complete directory.  A crash therefore
 * leaves the old or the new directory, and at worst leaked clusters.
 *
 * Costs: the directory is kept in memory (at most 64 MiB, usually a few
 * hundred bytes); load and store touch each bitmap cluster once.
 */
#include "block/qcow2/qcow2.h"
#include "block/qcow2-bitmap.h"
#include "block/dirty-bitmap.h"

enum {
    BITMAPS_EXT_LEN = 24,
};

struct Qcow2Bitmaps {
    /* The extension as on disk; protected by BDRVQcow2State.lock. */
    size_t ext_pos;                 /* of its data in cluster 0; 0: none */
    bool ext_ignored;               /* present, autoclear bit clear */
    uint32_t nb_bitmaps;
    uint64_t dir_size;
    uint64_t dir_offset;
    /*
     * The directory (Qcow2BitmapEntry *), replaced whole after each
     * update, so main-loop readers never see a half-changed one.
     */
    GPtrArray *dir;
};

static int coroutine_fn load_bitmaps(BlockDriverState *bs, Error **errp);
static int coroutine_fn store_bitmaps(BlockDriverState *bs, Error **errp);

/* --- Open and the header extension --- */

static Qcow2Bitmaps *get_state(BDRVQcow2State *s)
{
    if (!s->bitmaps) {
        s->bitmaps = g_new0(Qcow2Bitmaps, 1);
        s->bitmaps->dir = g_ptr_array_new_with_free_func(
            (GDestroyNotify)qcow2_bitmap_entry_free);
    }
    return s->bitmaps;
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    if (s->bitmaps) {
        g_ptr_array_unref(s->bitmaps->dir);
        g_free(s->bitmaps);
        s->bitmaps = NULL;
    }
}

bool qcow2_bitmaps_dir_location(BDRVQcow2State *s, uint32_t *nb,
                                uint64_t *offset, uint64_t *size)
{
    Qcow2Bitmaps *b = s->bitmaps;

    if (!b || !b->ext_pos || b->ext_ignored) {
        return false;
    }
    *nb = b->nb_bitmaps;
    *offset = b->dir_offset;
    *size = b->dir_size;
    return true;
}

bool qcow2_bitmaps_read_ext(BlockDriverState *bs, const uint8_t *data,
                            uint32_t len, size_t pos, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = get_state(s);

    if (len != BITMAPS_EXT_LEN) {
        error_setg(errp, "bitmaps_ext: Invalid extension length");
        return false;
    }
    b->ext_pos = pos;
    if (!(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        /* Written by a program unaware of bitmaps: all are invalid. */
        b->ext_ignored = true;
        return true;
    }
    b->nb_bitmaps = qcow2_get_be32(data);
    b->dir_size = qcow2_get_be64(data + 8);
    b->dir_offset = qcow2_get_be64(data + 16);
    if (qcow2_get_be32(data + 4)) {
        error_setg(errp, "bitmaps_ext: Reserved field is not zero");
        return false;
    }
    if (b->nb_bitmaps == 0) {
        error_setg(errp, "found bitmaps extension with zero bitmaps");
        return false;
    }
    if (b->nb_bitmaps > QCOW2_BITMAP_MAX_COUNT) {
        error_setg(errp, "bitmaps_ext: Image has %" PRIu32 " bitmaps, "
                   "exceeding the QEMU supported maximum of %d",
                   b->nb_bitmaps, QCOW2_BITMAP_MAX_COUNT);
        return false;
    }
    if (b->dir_size > QCOW2_BITMAP_MAX_DIR_SIZE) {
        error_setg(errp, "bitmaps_ext: Bitmap directory size (%" PRIu64
                   ") exceeds the maximum supported size (%llu)",
                   b->dir_size, QCOW2_BITMAP_MAX_DIR_SIZE);
        return false;
    }
    if (b->dir_offset & (s->cluster_size - 1) || b->dir_offset == 0) {
        error_setg(errp, "bitmaps_ext: invalid dirty bitmap directory "
                   "offset");
        return false;
    }
    return true;
}

/*
 * [@offset, @offset + @len) meets [@start, @end); no overflow for the
 * directory location of an extension not checked against the file yet.
 */
static bool range_hit(uint64_t offset, uint64_t len, int64_t start,
                      int64_t end)
{
    if (!len) {
        return false;
    }
    return offset < (uint64_t)start ? (uint64_t)start - offset < len
                                    : offset < (uint64_t)end;
}

Qcow2Metadata qcow2_bitmaps_overlap(BDRVQcow2State *s, unsigned checks,
                                    int64_t start, int64_t end)
{
    Qcow2Bitmaps *b = s->bitmaps;

    if (!b || !b->ext_pos || b->ext_ignored) {
        return QCOW2_MD_NONE;
    }
    if ((checks & QCOW2_MD_BITMAP_DIRECTORY) &&
        range_hit(b->dir_offset, b->dir_size, start, end)) {
        return QCOW2_MD_BITMAP_DIRECTORY;
    }
    if (!(checks & QCOW2_MD_BITMAP_TABLE)) {
        return QCOW2_MD_NONE;
    }
    for (guint i = 0; i < b->dir->len; i++) {
        const Qcow2BitmapEntry *e = b->dir->pdata[i];

        if (range_hit(e->table_offset, (uint64_t)e->table_size * 8, start,
                      end)) {
            return QCOW2_MD_BITMAP_TABLE;
        }
    }
    return QCOW2_MD_NONE;
}

/* Write the extension's 24 bytes in place (no flush). */
static int coroutine_fn write_ext_in_place(BlockDriverState *bs,
                                           uint32_t nb, uint64_t size,
                                           uint64_t offset)
{
    Qcow2Bitmaps *b = ((BDRVQcow2State *)bs->opaque)->bitmaps;
    uint8_t data[BITMAPS_EXT_LEN] = { 0 };

    qcow2_put_be32(data, nb);
    qcow2_put_be64(data + 8, size);
    qcow2_put_be64(data + 16, offset);
    return qcow2_write_metadata(bs, QCOW2_MD_HEADER, b->ext_pos,
                                sizeof(data), data);
}

int coroutine_fn qcow2_rewrite_header_extension(BlockDriverState *bs,
                                                uint32_t type,
                                                const void *data,
                                                uint32_t len, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = get_state(s);
    int64_t file_len = bdrv_getlength(bs->file->bs);
    size_t cs = s->cluster_size;
    g_autofree uint8_t *old = g_malloc0(cs);
    g_autofree uint8_t *new = g_malloc0(cs);
    size_t start = s->header_length;
    size_t pos = start, out = start, old_end, ext_end, bitmaps_pos = 0;
    uint64_t backing_off;
    uint32_t backing_len = 0;
    int ret;

    if (s->version < 3) {
        error_setg(errp, "Cannot store dirty bitmaps in qcow2 v2 files");
        return -ENOTSUP;
    }
    ret = bdrv_co_pread(bs->file, 0, MIN(file_len, (int64_t)cs), old, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the header");
        return ret;
    }
    backing_off = qcow2_get_be64(old + 8);
    if (backing_off) {
        backing_len = qcow2_get_be32(old + 16);
    }
    ext_end = backing_off ? backing_off : cs;
    memcpy(new, old, start);
    while (pos + 8 <= ext_end) {
        uint32_t t = qcow2_get_be32(old + pos);
        uint32_t l = qcow2_get_be32(old + pos + 4);
        size_t total = 8 + ALIGN_UP((size_t)l, 8);

        if (t == QCOW2_EXT_END) {
            pos += 8;
            break;
        }
        if (t != type) {
            if (t == QCOW2_EXT_BITMAPS) {
                bitmaps_pos = out + 8;
            }
            memcpy(new + out, old + pos, MIN(total, ext_end - pos));
            out += total;
        }
        pos += total;
    }
    old_end = MAX(pos, backing_off + backing_len);
    if (out + (data ? 8 + ALIGN_UP((size_t)len, 8) : 0) + 8 + backing_len >
        cs) {
        error_setg(errp, "qcow2: no room for header extension 0x%08" PRIx32
                   " in the header cluster", type);
        return -ENOSPC;
    }
    if (data) {
        qcow2_put_be32(new + out, type);
        qcow2_put_be32(new + out + 4, len);
        memcpy(new + out + 8, data, len);
        if (type == QCOW2_EXT_BITMAPS) {
            bitmaps_pos = out + 8;
        }
        out += 8 + ALIGN_UP((size_t)len, 8);
    }
    out += 8;                       /* the end marker, zeroed */
    if (backing_off) {
        memcpy(new + out, old + backing_off, backing_len);
        qcow2_put_be64(new + 8, out);
        out += backing_len;
    }
    ret = qcow2_write_metadata(bs, QCOW2_MD_HEADER, 0, MAX(out, old_end),
                               new);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not write the header");
        return ret;
    }
    b->ext_pos = bitmaps_pos;
    return 0;
}

/* Set or drop the autoclear bitmaps bit on disk; no flush. */
static int coroutine_fn set_autoclear(BlockDriverState *bs, bool on)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t v = on ? s->autoclear_features | QCOW2_AUTOCLEAR_BITMAPS
                    : s->autoclear_features & ~QCOW2_AUTOCLEAR_BITMAPS;
    int ret;

    if (v == s->autoclear_features) {
        return 0;
    }
    ret = qcow2_write_header_u64(bs, QCOW2_HDR_AUTOCLEAR, v);
    if (ret == 0) {
        s->autoclear_features = v;
    }
    return ret;
}

static Qcow2BitmapEntry *entry_dup(const Qcow2BitmapEntry *e)
{
    Qcow2BitmapEntry *c = g_new(Qcow2BitmapEntry, 1);

    *c = *e;
    c->name = g_strdup(e->name);
    return c;
}

/*
 * Clear the bitmaps autoclear bit, on disk before the extension goes: a
 * bit set without the extension makes QEMU refuse every metadata-checked
 * write (its bitmap directory then spans everything), while an extension
 * without the bit is merely ignored.
 */
static int coroutine_fn clear_autoclear(BlockDriverState *bs, Error **errp)
{
    int ret = set_autoclear(bs, false);

    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not clear the bitmaps "
                         "autoclear bit");
    }
    return ret;
}

static GPtrArray *dir_dup(GPtrArray *dir)
{
    GPtrArray *c = g_ptr_array_new_full(
        dir->len, (GDestroyNotify)qcow2_bitmap_entry_free);

    for (guint i = 0; i < dir->len; i++) {
        g_ptr_array_add(c, entry_dup(dir->pdata[i]));
    }
    return c;
}

static int dir_find(GPtrArray *dir, const char *name)
{
    for (guint i = 0; i < dir->len; i++) {
        if (!strcmp(((Qcow2BitmapEntry *)dir->pdata[i])->name, name)) {
            return i;
        }
    }
    return -1;
}

/*
 * Make @dir (consumed) the image's directory, crash-safely (see the
 * note at the top).  Called with s->lock held.
 */
static int coroutine_fn write_directory(BlockDriverState *bs, GPtrArray *dir,
                                        Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = s->bitmaps;
    g_autoptr(GPtrArray) owned = dir;
    uint64_t size = qcow2_bitmap_dir_size(dir);
    uint64_t old_offset = b->ext_ignored ? 0 : b->dir_offset;
    uint64_t old_size = b->ext_ignored ? 0 : b->dir_size;
    int64_t offset = 0, alloc_bytes = ALIGN_UP(size, s->cluster_size);
    int ret = 0;

    if (size > QCOW2_BITMAP_MAX_DIR_SIZE) {
        error_setg(errp, "Not enough space in the bitmap directory");
        return -ENOSPC;
    }
    if (dir->len) {
        g_autofree uint8_t *buf = g_try_malloc0(alloc_bytes);

        if (!buf) {
            error_setg(errp, "qcow2: could not allocate the bitmap "
                       "directory");
            return -ENOMEM;
        }
        qcow2_bitmap_dir_encode(dir, buf);
        offset = qcow2_alloc_clusters(bs, alloc_bytes >> s->cluster_bits);
        if (offset < 0) {
            error_setg_errno(errp, -offset, "qcow2: could not allocate "
                             "the bitmap directory");
            return offset;
        }
        /* New clusters: checked against the directory in use too. */
        ret = qcow2_write_metadata(bs, QCOW2_MD_NONE, offset, alloc_bytes,
                                   buf);
        if (ret == 0) {
            ret = qcow2_cache_write(s->refcount_cache);
        }
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write the "
                             "bitmap directory");
            qcow2_free_clusters(bs, offset, alloc_bytes, false);
            return ret;
        }
    }

    if (dir->len && b->ext_pos) {
        ret = write_ext_in_place(bs, dir->len, size, offset);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not update the "
                             "bitmaps extension");
        }
    } else if (dir->len) {
        uint8_t data[BITMAPS_EXT_LEN] = { 0 };

        qcow2_put_be32(data, dir->len);
        qcow2_put_be64(data + 8, size);
        qcow2_put_be64(data + 16, offset);
        ret = qcow2_rewrite_header_extension(bs, QCOW2_EXT_BITMAPS, data,
                                             sizeof(data), errp);
    } else if (b->ext_pos) {
        ret = clear_autoclear(bs, errp);
        if (ret == 0) {
            ret = qcow2_rewrite_header_extension(bs, QCOW2_EXT_BITMAPS, NULL,
                                                 0, errp);
        }
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not flush the "
                             "header");
        }
    }
    if (ret == 0 && dir->len) {
        ret = set_autoclear(bs, true);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not set the bitmaps "
                             "autoclear bit");
        }
    }
    if (ret < 0) {
        /*
         * The header may point to either directory now: leak the new
         * one rather than risk freeing a cluster in use.
         */
        return ret;
    }
    b->ext_ignored = false;
    b->nb_bitmaps = dir->len;
    b->dir_size = size;
    b->dir_offset = offset;
    g_ptr_array_unref(b->dir);
    b->dir = g_steal_pointer(&owned);
    if (old_size) {
        qcow2_free_clusters(bs, old_offset,
                            ALIGN_UP(old_size, s->cluster_size), false);
    }
    return 0;
}

/*
 * Rewrite the directory in place with @dir, which differs from it only
 * in flags, as QEMU does to set in_use at open: nothing is allocated.
 * Crash-safe without a copy: each entry's 4-byte flags field lies within
 * one sector, so a torn write leaves every entry old or new, and no
 * guest write happens before the flush.  Called with s->lock held.
 */
static int coroutine_fn flag_in_place(BlockDriverState *bs, GPtrArray *dir)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t size = qcow2_bitmap_dir_size(dir);
    g_autofree uint8_t *buf = g_try_malloc0(size);
    int ret;

    g_assert(size == s->bitmaps->dir_size);
    if (!buf) {
        return -ENOMEM;
    }
    qcow2_bitmap_dir_encode(dir, buf);
    ret = qcow2_write_metadata(bs, QCOW2_MD_BITMAP_DIRECTORY,
                               s->bitmaps->dir_offset, size, buf);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, int64_t file_len,
                                    Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = get_state(s);
    g_autofree uint8_t *buf = NULL;
    g_autoptr(GPtrArray) dir = NULL;
    int ret;

    if (!b->ext_pos && (s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) &&
        !bs->read_only) {
        /* Left by earlier blockd builds when they removed the last bitmap. */
        return clear_autoclear(bs, errp);
    }
    if (!b->ext_pos || b->ext_ignored) {
        if (b->ext_ignored) {
            warn_report("qcow2: '%s': a program lacking bitmap support "
                        "modified this file, so all bitmaps are now "
                        "considered inconsistent", bs->filename);
        }
        return 0;
    }
    if (b->dir_offset > (uint64_t)file_len ||
        b->dir_size > (uint64_t)file_len - b->dir_offset) {
        error_setg(errp, "qcow2: bitmap directory (offset 0x%" PRIx64 ", %"
                   PRIu64 " bytes) lies beyond the end of the image file (%"
                   PRId64 " bytes)", b->dir_offset, b->dir_size, file_len);
        return -EINVAL;
    }
    buf = g_try_malloc(MAX(b->dir_size, 1));
    if (!buf) {
        error_setg(errp, "qcow2: could not allocate the bitmap directory");
        return -ENOMEM;
    }
    ret = bdrv_co_pread(bs->file, b->dir_offset, b->dir_size, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        return ret;
    }
    dir = qcow2_bitmap_dir_decode(buf, b->dir_size, b->nb_bitmaps, errp);
    if (!dir) {
        return -EINVAL;
    }
    for (guint i = 0; i < dir->len; i++) {
        if (!qcow2_bitmap_entry_check(dir->pdata[i], s->cluster_bits,
                                      bs->total_bytes, file_len, errp)) {
            return -EINVAL;
        }
    }
    g_ptr_array_unref(b->dir);
    b->dir = g_steal_pointer(&dir);
    ret = load_bitmaps(bs, errp);
    if (ret < 0 || bs->read_only) {
        return ret;
    }

    /* Read/write: flag the loaded bitmaps before any guest write. */
    ret = qcow2_bitmaps_mark_in_use(bs, errp);
    if (ret < 0) {
        bdrv_release_all_dirty_bitmaps(bs);
    }
    return ret;
}

int coroutine_fn qcow2_bitmaps_mark_in_use(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = s->bitmaps;
    GPtrArray *flagged;
    bool changed = false;
    int ret;

    if (!b || !b->dir->len) {
        return 0;
    }
    flagged = dir_dup(b->dir);
    for (guint i = 0; i < flagged->len; i++) {
        Qcow2BitmapEntry *e = flagged->pdata[i];

        if (e->flags & QCOW2_BME_IN_USE) {
            continue;
        }
        if (qcow2_crash_safe_track(bs, e->name)) {
            continue;           /* its stored copy stays consistent */
        }
        e->flags |= QCOW2_BME_IN_USE;
        changed = true;
    }
    if (!changed) {
        g_ptr_array_unref(flagged);
        return 0;
    }
    co_mutex_lock(&s->lock);
    ret = flag_in_place(bs, flagged);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        g_ptr_array_unref(flagged);
        error_setg_errno(errp, -ret, "qcow2: could not mark bitmaps in use");
        return ret;
    }
    g_ptr_array_unref(b->dir);
    b->dir = flagged;
    return 0;
}

int coroutine_fn qcow2_bitmaps_note_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t keep = s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS;
    int ret;

    if (s->autoclear_features == keep) {
        return 0;
    }
    /* Autoclear features other than bitmaps are not maintained. */
    ret = qcow2_write_header_u64(bs, QCOW2_HDR_AUTOCLEAR, keep);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        s->autoclear_features = keep;
    }
    return ret;
}

int coroutine_fn qcow2_bitmaps_store_all(BlockDriverState *bs, Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = bs->opaque;
    int ret;

    qcow2_crash_safe_lock(bs);
    co_mutex_lock(&s->lock);
    ret = store_bitmaps(bs, errp);
    qcow2_crash_safe_stored(bs);
    if (ret == 0) {
        ret = qcow2_cache_write(s->l2_cache);
    }
    if (ret == 0) {
        ret = qcow2_cache_write(s->refcount_cache);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    co_mutex_unlock(&s->lock);
    qcow2_crash_safe_unlock(bs);
    if (ret < 0 && !*errp) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not flush",
                         bs->filename);
    }
    return ret;
}

static void coroutine_fn close_entry(void *opaque)
{
    BlockDriverState *bs = opaque;
    Error *local_err = NULL;

    if (qcow2_bitmaps_store_all(bs, &local_err) < 0) {
        error_prepend(&local_err, "Lost persistent bitmaps during "
                      "inactivation of node '%s': ", bs->node_name);
        error_report_err(local_err);
    }
}

void qcow2_bitmaps_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!s->bitmaps || bs->read_only || s->corrupt || !bs->file) {
        return;
    }
    co_run_sync(close_entry, bs);
}

void qcow2_bitmaps_set_readonly(BlockDriverState *bs, bool readonly)
{
    for (GList *l = bdrv_dirty_bitmaps(bs); l; l = l->next) {
        BdrvDirtyBitmap *bitmap = l->data;

        if (bdrv_dirty_bitmap_persistent(bitmap) &&
            !bdrv_dirty_bitmap_inconsistent(bitmap)) {
            bdrv_dirty_bitmap_set_readonly(bitmap, readonly);
        }
    }
}

/* --- The API --- */

void qcow2_stored_bitmap_free(Qcow2StoredBitmap *info)
{
    if (info) {
        g_free(info->name);
        g_free(info);
    }
}

static BDRVQcow2State *qcow2_state(BlockDriverState *bs, Error **errp)
{
    if (!bs->drv || strcmp(bs->drv->format_name, "qcow2")) {
        error_setg(errp, "Node '%s' is not a qcow2 node", bs->node_name);
        return NULL;
    }
    return bs->opaque;
}

GList *qcow2_list_bitmaps(BlockDriverState *bs)
{
    BDRVQcow2State *s = qcow2_state(bs, NULL);
    GList *list = NULL;

    if (!s || !s->bitmaps) {
        return NULL;
    }
    for (guint i = 0; i < s->bitmaps->dir->len; i++) {
        const Qcow2BitmapEntry *e = s->bitmaps->dir->pdata[i];
        Qcow2StoredBitmap *info = g_new0(Qcow2StoredBitmap, 1);

        info->name = g_strdup(e->name);
        info->granularity = 1U << e->granularity_bits;
        info->in_use = e->flags & QCOW2_BME_IN_USE;
        info->auto_enabled = e->flags & QCOW2_BME_AUTO;
        list = g_list_append(list, info);
    }
    return list;
}

uint64_t *coroutine_fn qcow2_bitmap_read_table(BlockDriverState *bs,
                                               const Qcow2BitmapEntry *e,
                                               Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file->bs);
    g_autofree uint64_t *table = g_try_new(uint64_t, MAX(e->table_size, 1));
    int ret;

    if (!table) {
        error_setg(errp, "qcow2: could not allocate the table of bitmap "
                   "'%s'", e->name);
        return NULL;
    }
    ret = bdrv_co_pread(bs->file, e->table_offset,
                        (int64_t)e->table_size * 8, table, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the table of "
                         "bitmap '%s'", e->name);
        return NULL;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t t = table[i] = GUINT64_FROM_BE(table[i]);
        uint64_t off = t & QCOW2_BME_TABLE_OFFSET_MASK;

        if ((t & ~QCOW2_BME_TABLE_OFFSET_MASK) > (off ? 0 : 1) ||
            (off & (s->cluster_size - 1)) ||
            (off && (int64_t)off > file_len - s->cluster_size)) {
            error_setg(errp, "qcow2: bitmap '%s': invalid bitmap table "
                       "entry %" PRIu32 " (0x%" PRIx64 ")", e->name, i, t);
            return NULL;
        }
    }
    return g_steal_pointer(&table);
}

/*
 * Read the data of bitmap @e into @bitmap, one cluster at a time.
 * Called with s->lock held.
 */
static int coroutine_fn read_bitmap_data(BlockDriverState *bs,
                                         const Qcow2BitmapEntry *e,
                                         BdrvDirtyBitmap *bitmap,
                                         Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = hbitmap_serialized_bytes(bdrv_dirty_bitmap_bits(bitmap));
    g_autofree uint64_t *table = qcow2_bitmap_read_table(bs, e, errp);
    g_autofree uint8_t *chunk = g_malloc(s->cluster_size);

    if (!table) {
        return -EINVAL;
    }
    for (uint64_t c = 0; c < e->table_size; c++) {
        uint64_t start = c * s->cluster_size;
        uint64_t len;
        uint64_t off = table[c] & QCOW2_BME_TABLE_OFFSET_MASK;

        if (start >= bytes) {
            break;
        }
        len = MIN((uint64_t)s->cluster_size, bytes - start);
        if (off) {
            int ret = bdrv_co_pread(bs->file, off, len, chunk, 0);

            if (ret < 0) {
                error_setg_errno(errp, -ret, "qcow2: could not read bitmap "
                                 "'%s'", e->name);
                return ret;
            }
        } else {
            memset(chunk, table[c] == QCOW2_BME_TABLE_ALL_ONES ? 0xff : 0,
                   len);
        }
        bdrv_dirty_bitmap_deserialize_part(bitmap, chunk, start, len);
    }
    return 0;
}

/* Make every stored bitmap a BdrvDirtyBitmap of @bs (at open). */
static int coroutine_fn load_bitmaps(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    GPtrArray *dir = s->bitmaps->dir;
    int ret = 0;

    co_mutex_lock(&s->lock);
    for (guint i = 0; i < dir->len && ret == 0; i++) {
        const Qcow2BitmapEntry *e = dir->pdata[i];
        BdrvDirtyBitmap *bitmap =
            bdrv_create_dirty_bitmap(bs, 1U << e->granularity_bits, e->name,
                                     errp);

        if (!bitmap) {
            ret = -EINVAL;
            break;
        }
        bdrv_dirty_bitmap_set_persistence(bitmap, true);
        if (e->flags & QCOW2_BME_IN_USE) {
            bdrv_dirty_bitmap_set_inconsistent(bitmap);
            continue;
        }
        ret = read_bitmap_data(bs, e, bitmap, errp);
        if (!(e->flags & QCOW2_BME_AUTO)) {
            bdrv_disable_dirty_bitmap(bitmap);
        }
        bdrv_dirty_bitmap_set_readonly(bitmap, bs->read_only);
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_prepend(errp, "Could not load bitmaps of '%s': ", bs->filename);
        bdrv_release_all_dirty_bitmaps(bs);
    }
    return ret;
}

/* Free the table and data clusters of @e. Called with s->lock held. */
static void coroutine_fn free_bitmap_clusters(BlockDriverState *bs,
                                              const Qcow2BitmapEntry *e)
{
    BDRVQcow2State *s = bs->opaque;
    Error *local_err = NULL;
    g_autofree uint64_t *table = qcow2_bitmap_read_table(bs, e, &local_err);

    if (!table) {
        /* Leaked, not freed: qemu-img check -r reclaims them. */
        warn_report("%s", error_get_pretty(local_err));
        error_free(local_err);
        return;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t off = table[i] & QCOW2_BME_TABLE_OFFSET_MASK;

        if (off) {
            qcow2_free_clusters(bs, off, s->cluster_size, false);
        }
    }
    if (e->table_size) {
        qcow2_free_clusters(bs, e->table_offset,
                            ALIGN_UP((int64_t)e->table_size * 8,
                                     s->cluster_size), false);
    }
}

static bool buf_is_all(const uint8_t *p, size_t len, uint8_t v)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != v) {
            return false;
        }
    }
    return true;
}

/*
 * Write the data clusters and the table of @bitmap into new clusters;
 * fills @e's table location.  Called with s->lock held.  On failure the
 * clusters allocated so far stay allocated (leaked).
 */
static int coroutine_fn write_bitmap_data(BlockDriverState *bs,
                                          Qcow2BitmapEntry *e,
                                          const BdrvDirtyBitmap *bitmap,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const HBitmap *bits = bdrv_dirty_bitmap_bits(bitmap);
    uint64_t bytes = hbitmap_serialized_bytes(bits);
    uint64_t nbits = DIV_ROUND_UP(hbitmap_size(bits),
                                  hbitmap_granularity(bits));
    g_autofree uint64_t *table = g_try_new0(uint64_t, MAX(e->table_size, 1));
    g_autofree uint8_t *chunk = g_malloc0(s->cluster_size);
    int64_t table_bytes = ALIGN_UP((int64_t)e->table_size * 8,
                                   s->cluster_size);
    int64_t off;
    int ret;

    if (!table) {
        error_setg(errp, "qcow2: could not allocate a bitmap table");
        return -ENOMEM;
    }
    for (uint32_t c = 0; c < e->table_size; c++) {
        uint64_t start = (uint64_t)c * s->cluster_size;
        uint64_t len = MIN((uint64_t)s->cluster_size, bytes - start);
        uint64_t valid = MIN((uint64_t)s->cluster_size * 8,
                             nbits - start * 8);

        memset(chunk, 0, s->cluster_size);
        hbitmap_serialize_part(bits, chunk, start, len);
        if (buf_is_all(chunk, s->cluster_size, 0)) {
            continue;
        }
        if (buf_is_all(chunk, valid / 8, 0xff) &&
            (valid % 8 == 0 ||
             chunk[valid / 8] == (1U << (valid % 8)) - 1)) {
            table[c] = QCOW2_BME_TABLE_ALL_ONES;
            continue;
        }
        off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            error_setg_errno(errp, -off, "qcow2: could not allocate bitmap "
                             "data");
            return off;
        }
        table[c] = off;
        ret = qcow2_write_metadata(bs, QCOW2_MD_NONE, off, s->cluster_size,
                                   chunk);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write bitmap "
                             "data");
            return ret;
        }
    }
    e->table_offset = 0;
    if (!e->table_size) {
        return 0;
    }
    off = qcow2_alloc_clusters(bs, table_bytes >> s->cluster_bits);
    if (off < 0) {
        error_setg_errno(errp, -off, "qcow2: could not allocate a bitmap "
                         "table");
        return off;
    }
    for (uint32_t c = 0; c < e->table_size; c++) {
        table[c] = GUINT64_TO_BE(table[c]);
    }
    ret = qcow2_write_metadata(bs, QCOW2_MD_NONE, off,
                               (int64_t)e->table_size * 8, table);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not write a bitmap "
                         "table");
        return ret;
    }
    e->table_offset = off;
    return 0;
}

/* Will @bitmap be stored at close? */
static bool bitmap_to_store(const BdrvDirtyBitmap *bitmap)
{
    return bdrv_dirty_bitmap_name(bitmap) &&
           bdrv_dirty_bitmap_persistent(bitmap) &&
           !bdrv_dirty_bitmap_readonly(bitmap) &&
           !bdrv_dirty_bitmap_inconsistent(bitmap) &&
           !bdrv_dirty_bitmap_get_skip_store(bitmap);
}

/*
 * Write the data and table of @bitmap into new clusters and return its
 * directory entry ("auto" if it records writes, never in_use).  Called
 * with s->lock held.
 */
static Qcow2BitmapEntry *coroutine_fn
stored_entry(BlockDriverState *bs, const BdrvDirtyBitmap *bitmap,
             Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t granularity = bdrv_dirty_bitmap_granularity(bitmap);
    Qcow2BitmapEntry *e = g_new0(Qcow2BitmapEntry, 1);

    e->name = g_strdup(bdrv_dirty_bitmap_name(bitmap));
    e->type = QCOW2_BME_TYPE_DIRTY;
    e->granularity_bits = __builtin_ctz(granularity);
    e->table_size = qcow2_bitmap_table_entries(bs->total_bytes, granularity,
                                               s->cluster_bits);
    e->flags = bdrv_dirty_bitmap_enabled(bitmap) ? QCOW2_BME_AUTO : 0;
    if (write_bitmap_data(bs, e, bitmap, errp) < 0) {
        qcow2_bitmap_entry_free(e);
        return NULL;
    }
    return e;
}

int coroutine_fn qcow2_bitmaps_store_new(BlockDriverState *bs,
                                         const BdrvDirtyBitmap *bitmap,
                                         Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    GPtrArray *dir = dir_dup(get_state(s)->dir);
    Qcow2BitmapEntry *e;

    g_assert(dir_find(dir, bdrv_dirty_bitmap_name(bitmap)) < 0);
    e = stored_entry(bs, bitmap, errp);
    if (!e) {
        g_ptr_array_unref(dir);
        return -EIO;
    }
    g_ptr_array_add(dir, e);
    return write_directory(bs, dir, errp);
}

const Qcow2BitmapEntry *qcow2_bitmaps_find(BDRVQcow2State *s,
                                           const char *name)
{
    int i;

    if (!s->bitmaps) {
        return NULL;
    }
    i = dir_find(s->bitmaps->dir, name);
    return i < 0 ? NULL : s->bitmaps->dir->pdata[i];
}

/*
 * Store every persistent bitmap of @bs (at close), in one directory
 * update: new data and tables first, then the directory, then the old
 * clusters are freed.  Called with s->lock held.
 */
static int coroutine_fn store_bitmaps(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GPtrArray) dir = NULL;
    g_autoptr(GPtrArray) replaced =
        g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_entry_free);
    bool changed = false;
    int ret;

    if (!s->bitmaps && !bdrv_dirty_bitmaps(bs)) {
        return 0;
    }
    get_state(s);
    dir = dir_dup(s->bitmaps->dir);
    /* Oldest first, so that new bitmaps keep their order on disk. */
    for (GList *l = g_list_last(bdrv_dirty_bitmaps(bs)); l; l = l->prev) {
        const BdrvDirtyBitmap *bitmap = l->data;
        Qcow2BitmapEntry *e;
        int i;

        if (!bitmap_to_store(bitmap)) {
            continue;
        }
        e = stored_entry(bs, bitmap, errp);
        if (!e) {
            return -EIO;
        }
        i = dir_find(dir, bdrv_dirty_bitmap_name(bitmap));
        if (i >= 0) {
            g_ptr_array_add(replaced, dir->pdata[i]);
            dir->pdata[i] = e;
        } else {
            g_ptr_array_add(dir, e);
        }
        changed = true;
    }
    if (!changed) {
        return 0;
    }
    ret = write_directory(bs, g_steal_pointer(&dir), errp);
    if (ret < 0) {
        return ret;
    }
    for (guint i = 0; i < replaced->len; i++) {
        free_bitmap_clusters(bs, replaced->pdata[i]);
    }
    return 0;
}

bool qcow2_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                      uint32_t granularity, Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = s->bitmaps;
    Qcow2BitmapEntry probe = { .name = (char *)name };

    if (s->version < 3) {
        error_setg(errp, "Cannot store dirty bitmaps in qcow2 v2 files");
    } else if (bs->read_only) {
        /* QEMU accepts it, then loses the bitmap at close. */
        error_setg(errp, "the node is read-only");
    } else if (granularity == 0 || (granularity & (granularity - 1))) {
        error_setg(errp, "Granularity must be power of 2");
    } else if (!qcow2_bitmap_check_granularity_bits(__builtin_ctz(granularity),
                                                    errp)) {
        /* errp is set */
    } else if (strlen(name) > QCOW2_BITMAP_MAX_NAME) {
        error_setg(errp, "Name length exceeds maximum (%d characters)",
                   QCOW2_BITMAP_MAX_NAME);
    } else if (DIV_ROUND_UP(DIV_ROUND_UP((uint64_t)bs->total_bytes,
                                         granularity), 8) >
               QCOW2_BME_MAX_PHYS_SIZE) {
        error_setg(errp, "Too much space will be occupied by the bitmap. "
                   "Use larger granularity");
    } else if (b && b->dir->len >= QCOW2_BITMAP_MAX_COUNT) {
        error_setg(errp, "Maximum number of persistent bitmaps is already "
                   "reached");
    } else if (b && qcow2_bitmap_dir_size(b->dir) +
               qcow2_bitmap_entry_size(&probe) > QCOW2_BITMAP_MAX_DIR_SIZE) {
        error_setg(errp, "Not enough space in the bitmap directory");
    } else if (b && dir_find(b->dir, name) >= 0) {
        error_setg(errp, "Bitmap with the same name is already stored");
    }
    if (*errp) {
        error_prepend(errp, "Can't make bitmap '%s' persistent in '%s': ",
                      name, bs->node_name);
        return false;
    }
    return true;
}

bool coroutine_fn qcow2_co_remove_persistent_dirty_bitmap(BlockDriverState *bs,
                                                          const char *name,
                                                          Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GPtrArray) dir = NULL;
    Qcow2BitmapEntry *old;
    int i, ret;

    if (!s->bitmaps || dir_find(s->bitmaps->dir, name) < 0) {
        return true;            /* never stored: nothing to remove */
    }
    if (bs->read_only || s->corrupt) {
        error_setg(errp, "qcow2: cannot remove bitmap '%s' from '%s': the "
                   "image is %s", name, bs->node_name,
                   bs->read_only ? "read-only" : "corrupt");
        return false;
    }
    /* Marks of a crash-safe bitmap write into its clusters: none now. */
    qcow2_crash_safe_lock(bs);
    co_mutex_lock(&s->lock);
    dir = dir_dup(s->bitmaps->dir);
    i = dir_find(dir, name);
    if (i < 0) {
        /* Removed while this waited for the locks. */
        co_mutex_unlock(&s->lock);
        qcow2_crash_safe_unlock(bs);
        return true;
    }
    old = g_ptr_array_steal_index(dir, i);
    ret = write_directory(bs, g_steal_pointer(&dir), errp);
    if (ret == 0) {
        free_bitmap_clusters(bs, old);
        qcow2_crash_safe_forget(bs, name);
    }
    co_mutex_unlock(&s->lock);
    qcow2_crash_safe_unlock(bs);
    qcow2_bitmap_entry_free(old);
    if (ret < 0) {
        error_prepend(errp, "qcow2: could not remove bitmap '%s': ", name);
        return false;
    }
    return true;
}
