/*
 * qcow2 repair of dirty images: rebuilding every refcount at open.
 *
 * The dirty incompatible bit says that a program using lazy refcounts
 * (QEMU with lazy_refcounts=on) did not close the image cleanly, so its
 * refcounts may be wrong in both directions.  Opened read/write, such an
 * image is repaired before anything else is written, as QEMU does.
 *
 * Design:
 *
 * 1. Count.  An in-memory array (one uint64_t per host cluster) receives
 *    one reference for every cluster the metadata uses: the header
 *    cluster, the L1 table, the refcount table, every refcount block the
 *    table points to, every L2 table, every data cluster (normal or
 *    preallocated zero; a compressed cluster adds one reference to each
 *    host cluster its sector span touches, so neighbours sharing a
 *    cluster count twice), and, with the bitmaps extension in use, the
 *    bitmap directory, the bitmap tables and their data clusters.
 *    Images with internal snapshots are refused: their tables are not
 *    walked yet.
 * 2. Place.  Every refcount block needed for a cluster with a nonzero
 *    count that the refcount table does not have yet is put in a cluster
 *    whose count is 0 (nothing uses it, so it may be overwritten), which
 *    then counts 1; this repeats until no block is missing.  The
 *    refcount table itself is not grown: an image that would need it is
 *    refused with a pointer to 'qemu-img check -r all'.
 * 3. Write.  All refcount blocks are written whole (the existing ones in
 *    place), then the changed refcount table entries, then the file is
 *    flushed.  Only then is the dirty bit cleared in the header (one
 *    8-byte write) and the file flushed again.  A crash at any point
 *    before that leaves the dirty bit set, so the next read/write open
 *    (blockd's or QEMU's) repairs again; while it is set nobody trusts
 *    the refcounts, so overwriting them in place is safe.
 *
 * Called at open, before the metadata caches are used: the blocks are
 * written directly to the image file.  OFLAG_COPIED is not rewritten:
 * without snapshots every cluster has refcount 1, as the flags say.
 */
#include "block/qcow2/qcow2.h"

typedef struct Qcow2Repair {
    BlockDriverState *bs;
    uint64_t *refs;                 /* per host cluster */
    int64_t nb;                     /* entries of refs */
    int64_t file_clusters;          /* clusters the file holds */
    int64_t file_len;               /* bytes, at open */
} Qcow2Repair;

/* Add one reference to host clusters [@offset, @offset + @bytes). */
static bool repair_ref(Qcow2Repair *r, int64_t offset, int64_t bytes,
                       const char *what, Error **errp)
{
    BDRVQcow2State *s = r->bs->opaque;
    int64_t first, last;

    if (bytes <= 0) {
        return true;
    }
    first = offset >> s->cluster_bits;
    last = (offset + bytes - 1) >> s->cluster_bits;
    if (offset < 0 || (uint64_t)offset + bytes > QCOW2_MAX_HOST_OFFSET ||
        first >= r->file_clusters) {
        error_setg(errp, "qcow2: cannot repair the dirty image: %s at "
                   "0x%" PRIx64 " lies beyond the end of the image file",
                   what, offset);
        return false;
    }
    if (last >= r->nb) {
        int64_t nb = MAX(last + 1, r->nb * 2);

        r->refs = g_renew(uint64_t, r->refs, nb);
        memset(r->refs + r->nb, 0, (nb - r->nb) * sizeof(uint64_t));
        r->nb = nb;
    }
    for (int64_t i = first; i <= last; i++) {
        if (r->refs[i] >= s->refcount_max) {
            error_setg(errp, "qcow2: cannot repair the dirty image: cluster "
                       "0x%" PRIx64 " has too many references (%s)",
                       (uint64_t)i << s->cluster_bits, what);
            return false;
        }
        r->refs[i]++;
    }
    return true;
}

static int coroutine_fn repair_count_l2(Qcow2Repair *r, uint64_t *l2,
                                        Error **errp)
{
    BDRVQcow2State *s = r->bs->opaque;

    for (int64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = GUINT64_FROM_BE(l2[i]);
        int64_t host, bytes;

        switch (qcow2_l2e_type(e, s->version)) {
        case QCOW2_CLUSTER_UNALLOCATED:
        case QCOW2_CLUSTER_ZERO_PLAIN:
            break;
        case QCOW2_CLUSTER_ZERO_ALLOC:
        case QCOW2_CLUSTER_NORMAL:
            host = e & QCOW2_L2E_OFFSET_MASK;
            if (qcow2_offset_into_cluster(s, host)) {
                error_setg(errp, "qcow2: cannot repair the dirty image: "
                           "data cluster 0x%" PRIx64 " is not cluster "
                           "aligned", host);
                return -EINVAL;
            }
            if (!repair_ref(r, host, s->cluster_size, "data cluster",
                            errp)) {
                return -EINVAL;
            }
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            qcow2_compressed_range(e, s->cluster_bits, &host, &bytes);
            if (!repair_ref(r, host, bytes, "compressed cluster", errp)) {
                return -EINVAL;
            }
            break;
        }
    }
    return 0;
}

static int coroutine_fn repair_count_bitmaps(Qcow2Repair *r, Error **errp)
{
    BlockDriverState *bs = r->bs;
    BDRVQcow2State *s = bs->opaque;
    uint32_t nb;
    uint64_t dir_offset, dir_size;
    g_autofree uint8_t *buf = NULL;
    g_autoptr(GPtrArray) dir = NULL;
    int ret;

    if (!qcow2_bitmaps_dir_location(s, &nb, &dir_offset,
                                    &dir_size)) {
        return 0;
    }
    if (!repair_ref(r, dir_offset, dir_size, "bitmap directory", errp)) {
        return -EINVAL;
    }
    buf = g_malloc(MAX(dir_size, 1));
    ret = bdrv_co_pread(bs->file, dir_offset, dir_size, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        return ret;
    }
    dir = qcow2_bitmap_dir_decode(buf, dir_size, nb, errp);
    if (!dir) {
        return -EINVAL;
    }
    for (guint i = 0; i < dir->len; i++) {
        Qcow2BitmapEntry *e = dir->pdata[i];
        int64_t bytes = (int64_t)e->table_size * 8;
        g_autofree uint64_t *table = NULL;

        if (!qcow2_bitmap_entry_check(e, s->cluster_bits, bs->total_bytes,
                                      r->file_len, errp)) {
            return -EINVAL;
        }
        if (!repair_ref(r, e->table_offset, bytes, "bitmap table", errp)) {
            return -EINVAL;
        }
        table = g_malloc(MAX(bytes, 8));
        ret = bdrv_co_pread(bs->file, e->table_offset, bytes, table, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read a bitmap "
                             "table");
            return ret;
        }
        for (uint32_t j = 0; j < e->table_size; j++) {
            uint64_t off = GUINT64_FROM_BE(table[j]) &
                           QCOW2_BME_TABLE_OFFSET_MASK;

            if (off && !repair_ref(r, off, s->cluster_size, "bitmap data",
                                   errp)) {
                return -EINVAL;
            }
        }
    }
    return 0;
}

/* Step 1: count every reference the metadata makes. */
static int coroutine_fn repair_count(Qcow2Repair *r, Error **errp)
{
    BlockDriverState *bs = r->bs;
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);
    int ret;

    if (!repair_ref(r, 0, s->cluster_size, "header", errp) ||
        !repair_ref(r, s->l1_table_offset, (int64_t)s->l1_size * 8,
                    "L1 table", errp) ||
        !repair_ref(r, s->refcount_table_offset,
                    (int64_t)s->refcount_table_size * 8, "refcount table",
                    errp)) {
        return -EINVAL;
    }
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        if (s->refcount_table[i] &&
            !repair_ref(r, s->refcount_table[i], s->cluster_size,
                        "refcount block", errp)) {
            return -EINVAL;
        }
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        int64_t off = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;

        if (!off) {
            continue;
        }
        if (!repair_ref(r, off, s->cluster_size, "L2 table", errp)) {
            return -EINVAL;
        }
        ret = bdrv_co_pread(bs->file, off, s->cluster_size, l2, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read L2 table");
            return ret;
        }
        ret = repair_count_l2(r, l2, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return repair_count_bitmaps(r, errp);
}

/* Step 2: find places for the refcount blocks the table lacks. */
static bool repair_place_blocks(Qcow2Repair *r, uint64_t *new_table,
                                Error **errp)
{
    BDRVQcow2State *s = r->bs->opaque;
    int64_t next_free = 0;
    bool again = true;

    while (again) {
        again = false;
        for (int64_t c = 0; c < r->nb; c++) {
            int64_t b = c >> s->refcount_block_bits;

            if (!r->refs[c]) {
                continue;
            }
            if (b >= s->refcount_table_size) {
                error_setg(errp, "qcow2: cannot repair the dirty image: the "
                           "refcount table is too small; run 'qemu-img "
                           "check -r all' on it");
                return false;
            }
            if (new_table[b]) {
                c = ((b + 1) << s->refcount_block_bits) - 1;
                continue;
            }
            while (next_free < r->nb && r->refs[next_free]) {
                next_free++;
            }
            /* A free cluster, or one just past the end of the file. */
            r->file_clusters = MAX(r->file_clusters, next_free + 1);
            if (!repair_ref(r, next_free << s->cluster_bits, s->cluster_size,
                            "refcount block", errp)) {
                return false;
            }
            new_table[b] = next_free << s->cluster_bits;
            again = true;
            break;
        }
    }
    return true;
}

/* Step 3: write the refcount blocks and table, flush. */
static int coroutine_fn repair_write(Qcow2Repair *r, uint64_t *new_table,
                                     Error **errp)
{
    BlockDriverState *bs = r->bs;
    BDRVQcow2State *s = bs->opaque;
    g_autofree void *block = g_malloc(s->cluster_size);
    g_autofree uint64_t *be = NULL;
    int64_t bytes = (int64_t)s->refcount_table_size * 8;
    int ret;

    for (uint32_t b = 0; b < s->refcount_table_size; b++) {
        int64_t first = (int64_t)b << s->refcount_block_bits;

        if (!new_table[b]) {
            continue;
        }
        memset(block, 0, s->cluster_size);
        for (int64_t i = 0; i < s->refcount_block_entries &&
                            first + i < r->nb; i++) {
            qcow2_refcount_set(block, s->refcount_order, i,
                               r->refs[first + i]);
        }
        ret = qcow2_write_metadata(bs, QCOW2_MD_REFCOUNT_BLOCK,
                                   new_table[b], s->cluster_size, block);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write a "
                             "refcount block");
            return ret;
        }
    }
    if (memcmp(new_table, s->refcount_table, bytes)) {
        be = g_malloc(bytes);
        for (uint32_t i = 0; i < s->refcount_table_size; i++) {
            be[i] = GUINT64_TO_BE(new_table[i]);
        }
        ret = qcow2_write_metadata(bs, QCOW2_MD_REFCOUNT_TABLE,
                                   s->refcount_table_offset, bytes, be);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write the "
                             "refcount table");
            return ret;
        }
        memcpy(s->refcount_table, new_table, bytes);
        qcow2_refcount_table_changed(s);
    }
    ret = bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not flush the image");
    }
    return ret;
}

int coroutine_fn qcow2_repair_dirty(BlockDriverState *bs, int64_t file_len,
                                    Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Repair r = { .bs = bs, .file_len = file_len };
    g_autofree uint64_t *new_table = NULL;
    int ret;

    if (!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY) ||
        bs->read_only) {
        return 0;
    }
    if (s->nb_snapshots) {
        error_setg(errp, "qcow2: image is dirty (lazy refcounts) and has "
                   "internal snapshots, which blockd cannot repair; run "
                   "'qemu-img check -r all' on it first");
        return -ENOTSUP;
    }
    r.file_clusters = qcow2_size_to_clusters(s, file_len);
    r.nb = MAX(r.file_clusters, 1);
    r.refs = g_try_new0(uint64_t, r.nb);
    if (!r.refs) {
        error_setg(errp, "qcow2: could not allocate the repair refcounts");
        return -ENOMEM;
    }
    ret = repair_count(&r, errp);
    if (ret < 0) {
        goto out;
    }
    new_table = g_memdup2(s->refcount_table,
                          (gsize)s->refcount_table_size * 8);
    if (!repair_place_blocks(&r, new_table, errp)) {
        ret = -EINVAL;
        goto out;
    }
    ret = repair_write(&r, new_table, errp);
    if (ret < 0) {
        goto out;
    }
    s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    ret = qcow2_write_header_u64(bs, QCOW2_HDR_INCOMPAT,
                                 s->incompatible_features);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        s->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
        error_setg_errno(errp, -ret, "qcow2: could not clear the dirty bit");
    }
    s->free_cluster_index = 0;
out:
    g_free(r.refs);
    return ret;
}
