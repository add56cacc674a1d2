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
 * in_use: opened read/write, the driver sets in_use on every auto bitmap
 * that does not have it (disabled bitmaps cannot change and are left
 * alone), rewriting the directory before any guest write can happen.
 * With no write tracking yet, the stored contents are still exact at
 * clean close only if the image was not written since the flag was set:
 * then the flag is cleared again; otherwise it stays, and QEMU and
 * qemu-img treat the bitmap as inconsistent, which is correct since it
 * did not record the writes.  A write counter (bumped before every guest
 * data change) tells the two cases apart.  The bitmaps issue replaces
 * this with an in-memory bitmap that is stored at close.
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
    /* Bumped before every change of guest data. */
    uint64_t write_count;
};

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

/*
 * Rewrite the extension area of the header cluster with the bitmaps
 * extension added (@nb > 0) or removed (@nb == 0), keeping every other
 * extension and the backing file name; one write, no flush.
 */
static int coroutine_fn rewrite_extensions(BlockDriverState *bs, uint32_t nb,
                                           uint64_t size, uint64_t offset,
                                           Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = s->bitmaps;
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
        uint32_t type = qcow2_get_be32(old + pos);
        uint32_t len = qcow2_get_be32(old + pos + 4);
        size_t total = 8 + ALIGN_UP((size_t)len, 8);

        if (type == QCOW2_EXT_END) {
            pos += 8;
            break;
        }
        if (type != QCOW2_EXT_BITMAPS) {
            memcpy(new + out, old + pos, MIN(total, ext_end - pos));
            out += total;
        }
        pos += total;
    }
    old_end = MAX(pos, backing_off + backing_len);
    if (out + 8 + BITMAPS_EXT_LEN + 8 + backing_len > cs) {
        error_setg(errp, "qcow2: no room for the bitmaps extension in the "
                   "header cluster");
        return -ENOSPC;
    }
    if (nb) {
        qcow2_put_be32(new + out, QCOW2_EXT_BITMAPS);
        qcow2_put_be32(new + out + 4, BITMAPS_EXT_LEN);
        bitmaps_pos = out + 8;
        qcow2_put_be32(new + bitmaps_pos, nb);
        qcow2_put_be64(new + bitmaps_pos + 8, size);
        qcow2_put_be64(new + bitmaps_pos + 16, offset);
        out += 8 + BITMAPS_EXT_LEN;
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
    } else if (dir->len || b->ext_pos) {
        ret = rewrite_extensions(bs, dir->len, size, offset, errp);
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

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, int64_t file_len,
                                    Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = get_state(s);
    g_autofree uint8_t *buf = NULL;
    g_autoptr(GPtrArray) dir = NULL;
    GPtrArray *flagged;
    bool changed = false;
    int ret;

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
    if (bs->read_only) {
        return 0;
    }

    /* Read/write: flag the auto bitmaps before any guest write. */
    flagged = dir_dup(b->dir);
    for (guint i = 0; i < flagged->len; i++) {
        Qcow2BitmapEntry *e = flagged->pdata[i];

        if ((e->flags & QCOW2_BME_AUTO) && !(e->flags & QCOW2_BME_IN_USE)) {
            e->flags |= QCOW2_BME_IN_USE;
            e->flagged = true;
            e->clean_at = b->write_count;
            changed = true;
        }
    }
    if (!changed) {
        g_ptr_array_unref(flagged);
        return 0;
    }
    co_mutex_lock(&s->lock);
    ret = write_directory(bs, flagged, errp);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_prepend(errp, "qcow2: could not mark bitmaps in use: ");
    }
    return ret;
}

int coroutine_fn qcow2_bitmaps_note_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t keep = s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS;
    int ret;

    if (s->bitmaps) {
        s->bitmaps->write_count++;
    }
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

static void coroutine_fn close_entry(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *b = s->bitmaps;
    Error *local_err = NULL;
    GPtrArray *dir = dir_dup(b->dir);
    bool changed = false;
    int ret;

    for (guint i = 0; i < dir->len; i++) {
        Qcow2BitmapEntry *e = dir->pdata[i];

        if (e->flagged && e->clean_at == b->write_count) {
            e->flags &= ~QCOW2_BME_IN_USE;
            e->flagged = false;
            changed = true;
        }
    }
    if (!changed) {
        g_ptr_array_unref(dir);
        return;
    }
    co_mutex_lock(&s->lock);
    ret = write_directory(bs, dir, &local_err);
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
    if (local_err) {
        error_prepend(&local_err, "qcow2: '%s': could not clear the in_use "
                      "flag of bitmaps (they stay inconsistent): ",
                      bs->filename);
        error_report_err(local_err);
    } else if (ret < 0) {
        error_report("qcow2: '%s': could not flush on close: %s",
                     bs->filename, g_strerror(-ret));
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

/* Read and check the bitmap table of @e. Called with s->lock held. */
static uint64_t *coroutine_fn read_table(BlockDriverState *bs,
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

bool coroutine_fn qcow2_load_bitmap(BlockDriverState *bs, const char *name,
                                    uint8_t **bits, uint64_t *nbits,
                                    uint32_t *granularity, Error **errp)
{
    BDRVQcow2State *s = qcow2_state(bs, errp);
    const Qcow2BitmapEntry *e;
    g_autofree uint64_t *table = NULL;
    g_autofree uint8_t *out = NULL;
    uint64_t n, bytes;
    int i, ret = 0;

    if (!s) {
        return false;
    }
    co_mutex_lock(&s->lock);
    i = s->bitmaps ? dir_find(s->bitmaps->dir, name) : -1;
    if (i < 0) {
        co_mutex_unlock(&s->lock);
        error_setg(errp, "Bitmap '%s' not found in the image", name);
        return false;
    }
    e = s->bitmaps->dir->pdata[i];
    if ((e->flags & QCOW2_BME_IN_USE) && !e->flagged) {
        co_mutex_unlock(&s->lock);
        error_setg(errp, "Bitmap '%s' is inconsistent (in use); it can only "
                   "be removed", name);
        return false;
    }
    n = DIV_ROUND_UP((uint64_t)bs->total_bytes, 1ULL << e->granularity_bits);
    bytes = DIV_ROUND_UP(n, 8);
    table = read_table(bs, e, errp);
    out = table ? g_try_malloc0(MAX(bytes, 1)) : NULL;
    if (table && !out) {
        error_setg(errp, "qcow2: could not allocate bitmap '%s'", name);
    }
    for (uint64_t c = 0; out && c * s->cluster_size < bytes; c++) {
        uint64_t start = c * s->cluster_size;
        uint64_t len = MIN((uint64_t)s->cluster_size, bytes - start);
        uint64_t off = table[c] & QCOW2_BME_TABLE_OFFSET_MASK;

        if (off) {
            ret = bdrv_co_pread(bs->file, off, len, out + start, 0);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "qcow2: could not read bitmap "
                                 "'%s'", name);
                break;
            }
        } else if (table[c] == QCOW2_BME_TABLE_ALL_ONES) {
            memset(out + start, 0xff, len);
        }
    }
    *granularity = 1U << e->granularity_bits;
    co_mutex_unlock(&s->lock);
    if (!out || ret < 0) {
        return false;
    }
    if (n % 8) {
        out[bytes - 1] &= (1U << (n % 8)) - 1;
    }
    *bits = g_steal_pointer(&out);
    *nbits = n;
    return true;
}

/* Free the table and data clusters of @e. Called with s->lock held. */
static void coroutine_fn free_bitmap_clusters(BlockDriverState *bs,
                                              const Qcow2BitmapEntry *e)
{
    BDRVQcow2State *s = bs->opaque;
    Error *local_err = NULL;
    g_autofree uint64_t *table = read_table(bs, e, &local_err);

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
 * Write the data clusters and the table of a bitmap into new clusters;
 * fills @e's table location.  Called with s->lock held.  On failure the
 * clusters allocated so far stay allocated (leaked).
 */
static int coroutine_fn write_bitmap_data(BlockDriverState *bs,
                                          Qcow2BitmapEntry *e,
                                          const uint8_t *bits, uint64_t nbits,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = DIV_ROUND_UP(nbits, 8);
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
        memcpy(chunk, bits + start, len);
        if (valid % 8) {
            chunk[len - 1] &= (1U << (valid % 8)) - 1;
        }
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

/* Common checks of store and remove: a writable, healthy qcow2 v3. */
static BDRVQcow2State *writable_state(BlockDriverState *bs, const char *op,
                                      const char *name, Error **errp)
{
    BDRVQcow2State *s = qcow2_state(bs, errp);

    if (!s) {
        return NULL;
    }
    if (bs->read_only) {
        error_setg(errp, "qcow2: cannot %s bitmap '%s': node '%s' is "
                   "read-only", op, name, bs->node_name);
        return NULL;
    }
    if (s->version < 3) {
        error_setg(errp, "Cannot store dirty bitmaps in qcow2 v2 files");
        return NULL;
    }
    if (s->corrupt) {
        error_setg(errp, "qcow2: cannot %s bitmap '%s': the image is "
                   "corrupt", op, name);
        return NULL;
    }
    get_state(s);
    return s;
}

bool coroutine_fn qcow2_store_bitmap(BlockDriverState *bs, const char *name,
                                     const uint8_t *bits, uint64_t nbits,
                                     uint32_t granularity, bool auto_enabled,
                                     Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = writable_state(bs, "store", name, errp);
    g_autoptr(GPtrArray) dir = NULL;
    Qcow2BitmapEntry *old = NULL;
    Qcow2BitmapEntry *e;
    uint64_t needed_bits;
    int i, ret;

    if (!s) {
        return false;
    }
    if (!*name || strlen(name) > QCOW2_BITMAP_MAX_NAME) {
        error_setg(errp, *name ? "Name length exceeds maximum (%d "
                   "characters)" : "Bitmap name must not be empty (maximum "
                   "%d characters)", QCOW2_BITMAP_MAX_NAME);
        return false;
    }
    if (granularity & (granularity - 1) || granularity == 0) {
        error_setg(errp, "Granularity must be power of 2");
        return false;
    }
    if (!qcow2_bitmap_check_granularity_bits(__builtin_ctz(granularity), errp)) {
        return false;
    }
    needed_bits = DIV_ROUND_UP((uint64_t)bs->total_bytes, granularity);
    if (nbits != needed_bits) {
        error_setg(errp, "qcow2: bitmap '%s' has %" PRIu64 " bits; the disk "
                   "needs %" PRIu64 " at granularity %" PRIu32, name, nbits,
                   needed_bits, granularity);
        return false;
    }
    if (DIV_ROUND_UP(nbits, 8) > QCOW2_BME_MAX_PHYS_SIZE) {
        error_setg(errp, "Too much space will be occupied by the bitmap. "
                   "Use larger granularity");
        return false;
    }

    co_mutex_lock(&s->lock);
    dir = dir_dup(s->bitmaps->dir);
    i = dir_find(dir, name);
    if (i < 0 && dir->len >= QCOW2_BITMAP_MAX_COUNT) {
        co_mutex_unlock(&s->lock);
        error_setg(errp, "Maximum number of persistent bitmaps is already "
                   "reached");
        return false;
    }
    e = g_new0(Qcow2BitmapEntry, 1);
    e->name = g_strdup(name);
    e->type = QCOW2_BME_TYPE_DIRTY;
    e->granularity_bits = __builtin_ctz(granularity);
    e->table_size = qcow2_bitmap_table_entries(bs->total_bytes, granularity,
                                               s->cluster_bits);
    e->flags = auto_enabled ? QCOW2_BME_AUTO | QCOW2_BME_IN_USE : 0;
    e->flagged = auto_enabled;
    e->clean_at = s->bitmaps->write_count;
    if (i >= 0) {
        old = dir->pdata[i];
        dir->pdata[i] = e;
    } else {
        g_ptr_array_add(dir, e);
    }
    if (qcow2_bitmap_dir_size(dir) > QCOW2_BITMAP_MAX_DIR_SIZE) {
        co_mutex_unlock(&s->lock);
        qcow2_bitmap_entry_free(old);
        error_setg(errp, "Not enough space in the bitmap directory");
        return false;
    }
    ret = write_bitmap_data(bs, e, bits, nbits, errp);
    if (ret == 0) {
        ret = write_directory(bs, g_steal_pointer(&dir), errp);
    }
    if (ret == 0 && old) {
        free_bitmap_clusters(bs, old);
    }
    co_mutex_unlock(&s->lock);
    qcow2_bitmap_entry_free(old);
    if (ret < 0) {
        error_prepend(errp, "qcow2: could not store bitmap '%s': ", name);
        return false;
    }
    return true;
}

bool coroutine_fn qcow2_remove_bitmap(BlockDriverState *bs, const char *name,
                                      Error **errp)
{
    ERRP_GUARD();
    BDRVQcow2State *s = writable_state(bs, "remove", name, errp);
    g_autoptr(GPtrArray) dir = NULL;
    Qcow2BitmapEntry *old;
    int i, ret;

    if (!s) {
        return false;
    }
    co_mutex_lock(&s->lock);
    dir = dir_dup(s->bitmaps->dir);
    i = dir_find(dir, name);
    if (i < 0) {
        co_mutex_unlock(&s->lock);
        error_setg(errp, "Bitmap '%s' not found in the image", name);
        return false;
    }
    old = g_ptr_array_steal_index(dir, i);
    ret = write_directory(bs, g_steal_pointer(&dir), errp);
    if (ret == 0) {
        free_bitmap_clusters(bs, old);
    }
    co_mutex_unlock(&s->lock);
    qcow2_bitmap_entry_free(old);
    if (ret < 0) {
        error_prepend(errp, "qcow2: could not remove bitmap '%s': ", name);
        return false;
    }
    return true;
}
