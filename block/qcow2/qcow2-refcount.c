/*
 * qcow2 refcounts: the refcount table, refcount blocks and host cluster
 * allocation.
 *
 * Every host cluster has a reference count, stored in a refcount block
 * (one cluster of refcount_bits-wide entries, big-endian, or packed from
 * the least significant bit for widths below 8) found through the
 * refcount table.  A missing block means refcount 0 for all the clusters
 * it would cover.
 *
 * Allocation scans for a run of clusters with refcount 0 from
 * free_cluster_index upwards, skipping host ranges that unlocked data
 * I/O still uses (s->inflight: a cluster discarded while a read of it is
 * in flight must not be handed out again yet).  It then makes sure that
 * every refcount block covering the run exists, and retries from the
 * scan whenever it had to create one, because the new block may have
 * taken clusters of the run.
 *
 * Crash safety: a new refcount block is written and flushed before the
 * refcount table entry that points to it; a grown refcount table (with
 * the blocks that cover its own clusters) is written and flushed before
 * the header points to it, and the old table is freed only afterwards.
 * Increments stay in the refcount cache, which the L2 cache depends on
 * once it links the clusters (see qcow2-cache.c); decrements make the
 * refcount cache depend on the L2 cache.  So an image that dies at any
 * point has, at worst, clusters with a refcount but no user (leaks).
 *
 * Compressed data is allocated at byte granularity (qcow2_alloc_bytes):
 * a host cluster shared by several compressed clusters counts one
 * reference for each.
 *
 * Clusters that an L2 update stopped using (qcow2_free_l2e) are not
 * freed at once but queued, and only freed after the L2 cache has been
 * written back and the file flushed: until the unlink is on disk, the
 * old L2 entry is what a crash leaves, so the cluster must keep its old
 * data (see "Deferred frees" below).
 */
#include "block/qcow2/qcow2.h"
#include "block/qcow2/trace.h"

uint64_t qcow2_refcount_get(const void *block, int order, uint64_t index)
{
    const uint8_t *p = block;

    switch (order) {
    case 0: case 1: case 2: {
        int bits = 1 << order;
        int shift = (index * bits) % 8;

        return (p[index * bits / 8] >> shift) & ((1U << bits) - 1);
    }
    case 3:
        return p[index];
    case 4:
        return ((uint64_t)p[index * 2] << 8) | p[index * 2 + 1];
    case 5: {
        uint32_t v;

        memcpy(&v, p + index * 4, 4);
        return GUINT32_FROM_BE(v);
    }
    default: {
        uint64_t v;

        memcpy(&v, p + index * 8, 8);
        return GUINT64_FROM_BE(v);
    }
    }
}

void qcow2_refcount_set(void *block, int order, uint64_t index,
                        uint64_t value)
{
    uint8_t *p = block;

    switch (order) {
    case 0: case 1: case 2: {
        int bits = 1 << order;
        int shift = (index * bits) % 8;
        uint8_t mask = ((1U << bits) - 1) << shift;
        uint8_t *byte = &p[index * bits / 8];

        *byte = (*byte & ~mask) | ((value << shift) & mask);
        break;
    }
    case 3:
        p[index] = value;
        break;
    case 4:
        p[index * 2] = value >> 8;
        p[index * 2 + 1] = value;
        break;
    case 5: {
        uint32_t v = GUINT32_TO_BE((uint32_t)value);

        memcpy(p + index * 4, &v, 4);
        break;
    }
    default: {
        uint64_t v = GUINT64_TO_BE(value);

        memcpy(p + index * 8, &v, 8);
        break;
    }
    }
}

void qcow2_refcount_table_changed(BDRVQcow2State *s)
{
    uint32_t used = s->refcount_table_size;

    while (used && !s->refcount_table[used - 1]) {
        used--;
    }
    s->refcount_table_used = used;
}

/* A free queued by qcow2_free_l2e(), see "Deferred frees" below. */
typedef struct Qcow2DeferredFree {
    int64_t offset;
    int64_t bytes;
    bool pass_discard;
} Qcow2DeferredFree;

int coroutine_fn qcow2_refcount_init(BlockDriverState *bs, int64_t file_len,
                                     Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t bytes = (int64_t)s->refcount_table_size * 8;
    int ret;

    s->deferred_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2DeferredFree));
    s->refcount_table = g_try_malloc0(MAX(bytes, 8));
    if (!s->refcount_table) {
        error_setg(errp, "Could not allocate refcount table");
        return -ENOMEM;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_REFTABLE_LOAD);
    ret = bdrv_co_pread(bs->file, s->refcount_table_offset, bytes,
                        s->refcount_table, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read refcount table");
        return ret;
    }
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t e = GUINT64_FROM_BE(s->refcount_table[i]);

        s->refcount_table[i] = e & QCOW2_REFT_OFFSET_MASK;
        if (!s->refcount_table[i]) {
            continue;
        }
        if (qcow2_offset_into_cluster(s, e)) {
            error_setg(errp, "qcow2: refcount block offset 0x%" PRIx64
                       " (refcount table entry %" PRIu32 ") is not "
                       "cluster aligned", e, i);
            return -EINVAL;
        }
        if ((int64_t)s->refcount_table[i] > file_len - s->cluster_size) {
            error_setg(errp, "qcow2: refcount block 0x%" PRIx64
                       " (refcount table entry %" PRIu32 ") lies beyond "
                       "the end of the image file (%" PRId64 " bytes); "
                       "the file may be truncated",
                       s->refcount_table[i], i, file_len);
            return -EINVAL;
        }
    }
    qcow2_refcount_table_changed(s);
    return 0;
}

/*
 * The offset of the refcount block of table entry @r: 0 if there is none,
 * or -EIO (after signalling corruption) if the entry cannot be one.  The
 * table was validated at open, but a damaged image can still make us
 * overwrite it at run time (its clusters may have had refcount 0).
 */
static int64_t refblock_offset(BlockDriverState *bs, int64_t r)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t offset;

    if (r >= s->refcount_table_size || !s->refcount_table[r]) {
        return 0;
    }
    offset = s->refcount_table[r];
    if (qcow2_offset_into_cluster(s, offset) ||
        offset >= QCOW2_MAX_HOST_OFFSET) {
        return qcow2_signal_corruption(bs, -1, -1, "Refblock offset %#" PRIx64
                                       " unaligned or out of range "
                                       "(reftable index: %#" PRIx64 ")",
                                       offset, r);
    }
    return offset;
}

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs,
                                    int64_t cluster_index,
                                    uint64_t *refcount)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t offset = refblock_offset(bs,
                                     cluster_index >> s->refcount_block_bits);
    void *block;
    int ret;

    *refcount = 0;
    if (offset <= 0) {
        return offset;
    }
    ret = qcow2_cache_get(s->refcount_cache, offset, &block);
    if (ret < 0) {
        return ret;
    }
    *refcount = qcow2_refcount_get(block, s->refcount_order,
                                   cluster_index &
                                   (s->refcount_block_entries - 1));
    qcow2_cache_put(s->refcount_cache, &block);
    return 0;
}

/* The end of the first in-flight range that overlaps the clusters. */
static int64_t inflight_overlap_end(BDRVQcow2State *s, int64_t start,
                                    int64_t n)
{
    int64_t lo = start << s->cluster_bits;
    int64_t hi = (start + n) << s->cluster_bits;

    for (GList *l = s->inflight.head; l; l = l->next) {
        Qcow2InflightIO *io = l->data;

        if (io->host_start < hi && lo < io->host_end) {
            return DIV_ROUND_UP(io->host_end, s->cluster_size);
        }
    }
    return -1;
}

/*
 * Find @n contiguous clusters with refcount 0, not in use by in-flight
 * I/O, from free_cluster_index on.  Returns the first cluster index.
 */
static int64_t coroutine_fn find_free_clusters(BlockDriverState *bs,
                                               int64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t max_cluster = QCOW2_MAX_HOST_OFFSET >> s->cluster_bits;
    int64_t run_start = s->free_cluster_index;
    int64_t c = run_start;

    for (;;) {
        int64_t r = c >> s->refcount_block_bits;
        int64_t block_end = (r + 1) << s->refcount_block_bits;
        int64_t offset;
        void *block;
        int ret;

        if (c - run_start >= n) {
            int64_t skip = inflight_overlap_end(s, run_start, n);

            if (skip < 0 && run_start == 0) {
                /* Only a damaged refcount says the header cluster is free. */
                return qcow2_signal_corruption(bs, -1, -1, "Refcount of the header "
                                               "cluster is 0");
            }
            if (skip < 0) {
                return run_start;
            }
            c = run_start = skip;
            continue;
        }
        if (c >= max_cluster) {
            return -ENOSPC;
        }
        offset = refblock_offset(bs, r);
        if (offset < 0) {
            return offset;
        }
        if (offset == 0) {
            c = MIN(block_end, run_start + n);
            continue;
        }
        ret = qcow2_cache_get(s->refcount_cache, offset, &block);
        if (ret < 0) {
            return ret;
        }
        for (; c < block_end && c - run_start < n; c++) {
            if (qcow2_refcount_get(block, s->refcount_order,
                                   c & (s->refcount_block_entries - 1))) {
                run_start = c + 1;
                /*
                 * Keep the hint at the first free cluster: otherwise
                 * every allocation rescans all clusters in use below
                 * it, and filling an image costs quadratic time.
                 */
                if (c == s->free_cluster_index) {
                    s->free_cluster_index = c + 1;
                }
            }
        }
        qcow2_cache_put(s->refcount_cache, &block);
    }
}

/*
 * Add @addend (+1 or -1) to the refcount of every cluster in
 * [@first, @first + @n).  All refcount blocks must exist.
 */
static int coroutine_fn update_refcounts(BlockDriverState *bs, int64_t first,
                                         int64_t n, int addend)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t c = first;

    while (c < first + n) {
        int64_t r = c >> s->refcount_block_bits;
        int64_t block_end = (r + 1) << s->refcount_block_bits;
        void *block;
        int ret;

        int64_t offset = refblock_offset(bs, r);

        BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC);
        if (offset < 0) {
            return offset;
        }
        if (offset == 0) {
            return qcow2_signal_corruption(bs, -1, -1, "refcount block for cluster "
                                           "0x%" PRIx64 " missing",
                                           c << s->cluster_bits);
        }
        ret = qcow2_cache_get(s->refcount_cache, offset, &block);
        if (ret < 0) {
            return ret;
        }
        for (; c < block_end && c < first + n; c++) {
            uint64_t i = c & (s->refcount_block_entries - 1);
            uint64_t old = qcow2_refcount_get(block, s->refcount_order, i);

            if ((addend < 0 && old == 0) ||
                (addend > 0 && old == s->refcount_max)) {
                qcow2_cache_put(s->refcount_cache, &block);
                if (addend > 0) {
                    return -ERANGE;
                }
                return qcow2_signal_corruption(bs, -1, -1, "refcount of cluster "
                                               "0x%" PRIx64 " dropped "
                                               "below 0",
                                               c << s->cluster_bits);
            }
            qcow2_refcount_set(block, s->refcount_order, i, old + addend);
            if (old + addend == 0) {
                qcow2_cache_discard(s->l2_cache, c << s->cluster_bits);
                s->free_cluster_index = MIN(s->free_cluster_index, c);
                if (s->free_byte_offset &&
                    s->free_byte_offset >> s->cluster_bits == c) {
                    /* Free now, it may go to anyone: no more bytes here. */
                    s->free_byte_offset = 0;
                }
            }
        }
        qcow2_cache_mark_dirty(s->refcount_cache, block);
        qcow2_cache_put(s->refcount_cache, &block);
    }
    return 0;
}

/* Write the 12 bytes of refcount table offset and size in the header. */
static int coroutine_fn write_reftable_header(BlockDriverState *bs,
                                              int64_t offset,
                                              uint32_t clusters)
{
    uint8_t hdr[12];
    uint64_t be_offset = GUINT64_TO_BE(offset);
    uint32_t be_clusters = GUINT32_TO_BE(clusters);

    memcpy(hdr, &be_offset, 8);
    memcpy(hdr + 8, &be_clusters, 4);
    return qcow2_write_metadata(bs, QCOW2_MD_HEADER,
                                QCOW2_HDR_REFTABLE_OFFSET, sizeof(hdr), hdr);
}

static bool refblock_missing(BDRVQcow2State *s, int64_t r)
{
    return r >= s->refcount_table_size || !s->refcount_table[r];
}

/*
 * Grow the refcount table to at least @min_entries entries.  The new
 * table goes to a free area together with the refcount blocks that the
 * area itself needs; blocks, table and the refcounts of the area (in
 * existing blocks) are on disk before the header points to the table.
 */
static int coroutine_fn grow_refcount_table(BlockDriverState *bs,
                                            int64_t min_entries)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t per_cluster = s->cluster_size / 8;
    int64_t entries = MAX(min_entries,
                          (int64_t)s->refcount_table_size * 3 / 2);
    int64_t table_clusters, nb_blocks = 0, needed, start, table_start;
    int64_t first_r, last_r;
    g_autofree uint64_t *table = NULL;
    uint8_t *blocks;
    int64_t old_offset = s->refcount_table_offset;
    int64_t old_clusters = DIV_ROUND_UP((int64_t)s->refcount_table_size * 8,
                                        s->cluster_size);
    int ret;

    /* Find an area for nb_blocks blocks and the table, to a fixpoint. */
    for (;;) {
        entries = ALIGN_UP(entries, per_cluster);
        if (entries * 8 > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
        table_clusters = entries / per_cluster;
        start = find_free_clusters(bs, nb_blocks + table_clusters);
        if (start < 0) {
            return start;
        }
        first_r = start >> s->refcount_block_bits;
        last_r = (start + nb_blocks + table_clusters - 1) >>
                 s->refcount_block_bits;
        needed = 0;
        for (int64_t r = first_r; r <= last_r; r++) {
            needed += refblock_missing(s, r);
        }
        if (last_r >= entries) {
            entries = last_r + 1;
        } else if (needed > nb_blocks) {
            nb_blocks = needed;
        } else {
            break;
        }
    }
    table_start = start + nb_blocks;

    table = g_try_new0(uint64_t, entries);
    blocks = blk_memalign(MAX(needed, 1) * s->cluster_size);
    if (!table || !blocks) {
        blk_vfree(blocks);
        return -ENOMEM;
    }
    memset(blocks, 0, MAX(needed, 1) * s->cluster_size);
    memcpy(table, s->refcount_table, s->refcount_table_size * 8);

    /* New blocks at [start, start + needed), in region order. */
    ret = 0;
    for (int64_t r = first_r, k = 0; r <= last_r; r++) {
        if (refblock_missing(s, r)) {
            table[r] = (uint64_t)(start + k++) << s->cluster_bits;
        }
    }
    for (int64_t c = start; c < table_start + table_clusters && ret == 0;
         c++) {
        int64_t r = c >> s->refcount_block_bits;

        if (c >= start + needed && c < table_start) {
            continue;       /* unused slack: stays free */
        }
        if (refblock_missing(s, r)) {
            int64_t k = (int64_t)(table[r] >> s->cluster_bits) - start;

            qcow2_refcount_set(blocks + k * s->cluster_size,
                               s->refcount_order,
                               c & (s->refcount_block_entries - 1), 1);
        } else {
            ret = update_refcounts(bs, c, 1, 1);
        }
    }

    /* Blocks, refcount cache and table on disk, then the header. */
    if (ret == 0 && needed) {
        /* Not refcount blocks in use yet: checked against all of them. */
        ret = qcow2_write_metadata(bs, QCOW2_MD_NONE,
                                   start << s->cluster_bits,
                                   needed * s->cluster_size, blocks);
    }
    blk_vfree(blocks);
    if (ret == 0) {
        ret = qcow2_cache_write(s->refcount_cache);
    }
    if (ret < 0) {
        return ret;
    }
    for (int64_t i = 0; i < entries; i++) {
        table[i] = GUINT64_TO_BE(table[i]);
    }
    ret = qcow2_write_metadata(bs, QCOW2_MD_NONE,
                               table_start << s->cluster_bits, entries * 8,
                               table);
    for (int64_t i = 0; i < entries; i++) {
        table[i] = GUINT64_FROM_BE(table[i]);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        ret = write_reftable_header(bs, table_start << s->cluster_bits,
                                    table_clusters);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        return ret;
    }

    g_free(s->refcount_table);
    s->refcount_table = g_steal_pointer(&table);
    s->refcount_table_size = entries;
    qcow2_refcount_table_changed(s);
    s->refcount_table_offset = table_start << s->cluster_bits;

    /* The header no longer points to the old table: free it. */
    return update_refcounts(bs, old_offset >> s->cluster_bits, old_clusters,
                            -1);
}

/*
 * Undo a new refcount block at cluster @c that no table entry points to
 * yet: drop it from the cache (dirty, it would fail every later flush
 * the same way, e.g. with ENOSPC past the end of a full file) and, if
 * another block counts its cluster (@counted), free the cluster.
 */
static void coroutine_fn forget_new_refblock(BlockDriverState *bs, int64_t c,
                                             bool counted)
{
    BDRVQcow2State *s = bs->opaque;

    qcow2_cache_discard(s->refcount_cache, c << s->cluster_bits);
    if (counted) {
        update_refcounts(bs, c, 1, -1);     /* a failure leaks it */
    }
}

/*
 * Create refcount block @r (covering clusters [r * E, (r + 1) * E)).
 * Returns 0 with the block in place (on disk, in the table), or -errno.
 * May create other blocks instead (the caller rescans).
 */
static int coroutine_fn alloc_refcount_block(BlockDriverState *bs, int64_t r)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t c, rc;
    void *block;
    int ret;
    uint64_t be;

    BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC);
    if (r >= s->refcount_table_size) {
        return grow_refcount_table(bs, r + 1);
    }
    c = find_free_clusters(bs, 1);
    if (c < 0) {
        return c;
    }
    rc = c >> s->refcount_block_bits;
    if (rc != r && refblock_missing(s, rc)) {
        /* The block's own cluster needs a block first. */
        return alloc_refcount_block(bs, rc);
    }
    if (rc != r) {
        ret = update_refcounts(bs, c, 1, 1);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_cache_get_empty(s->refcount_cache, c << s->cluster_bits,
                                &block);
    if (ret < 0) {
        forget_new_refblock(bs, c, rc != r);
        return ret;
    }
    if (rc == r) {
        qcow2_refcount_set(block, s->refcount_order,
                           c & (s->refcount_block_entries - 1), 1);
    }
    qcow2_cache_mark_dirty(s->refcount_cache, block);
    qcow2_cache_put(s->refcount_cache, &block);

    /* The block (and its own refcount) is stable before the table entry. */
    ret = qcow2_cache_flush(s->refcount_cache);
    if (ret < 0) {
        forget_new_refblock(bs, c, rc != r);
        return ret;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC_HOOKUP);
    be = GUINT64_TO_BE((uint64_t)c << s->cluster_bits);
    ret = qcow2_write_metadata(bs, QCOW2_MD_REFCOUNT_TABLE,
                               s->refcount_table_offset + r * 8, 8, &be);
    if (ret < 0) {
        return ret;
    }
    s->refcount_table[r] = c << s->cluster_bits;
    qcow2_refcount_table_changed(s);
    return bdrv_co_flush(bs->file->bs);
}

int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs,
                                          int64_t nb_clusters)
{
    BDRVQcow2State *s = bs->opaque;

    BLKDBG_EVENT(bs->file, BLKDBG_CLUSTER_ALLOC);
    for (;;) {
        int64_t start = find_free_clusters(bs, nb_clusters);
        bool retry = false;
        int ret;

        if (start < 0) {
            return start;
        }
        for (int64_t r = start >> s->refcount_block_bits;
             r <= (start + nb_clusters - 1) >> s->refcount_block_bits; r++) {
            if (refblock_missing(s, r)) {
                ret = alloc_refcount_block(bs, r);
                if (ret < 0) {
                    return ret;
                }
                retry = true;
                break;
            }
        }
        if (retry) {
            continue;
        }
        ret = update_refcounts(bs, start, nb_clusters, 1);
        if (ret < 0) {
            return ret;
        }
        if (start == s->free_cluster_index) {
            s->free_cluster_index = start + nb_clusters;
        }
        trace_qcow2_alloc_clusters(bs, nb_clusters,
                                   start << s->cluster_bits);
        return start << s->cluster_bits;
    }
}

/*
 * Compressed clusters are packed one after the other; a host cluster
 * holding parts of k of them has refcount k.  A new host cluster is
 * taken when the data does not fit into the rest of the current one:
 * if the allocator hands out the very next cluster, the data crosses
 * into it; otherwise it starts the new cluster and the rest of the old
 * one stays unused.
 */
int64_t coroutine_fn qcow2_alloc_bytes(BlockDriverState *bs, int64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t offset = s->free_byte_offset;
    int64_t room = s->cluster_size - qcow2_offset_into_cluster(s, offset);
    int64_t new_cluster = 0;
    int ret;

    g_assert(size > 0 && size <= s->cluster_size);
    if (offset) {
        uint64_t refcount;

        ret = qcow2_get_refcount(bs, offset >> s->cluster_bits, &refcount);
        if (ret < 0) {
            return ret;
        }
        if (refcount >= s->refcount_max) {
            offset = 0;         /* it cannot take another reference */
        }
    }
    if (!offset || room < size) {
        new_cluster = qcow2_alloc_clusters(bs, 1);
        if (new_cluster < 0) {
            return new_cluster;
        }
        if (!offset || new_cluster != offset + room) {
            offset = new_cluster;
        }
    }
    /* A new cluster has its reference already; the current one not. */
    if (offset != new_cluster) {
        ret = qcow2_ref_clusters(bs, offset, 1);
        if (ret < 0) {
            if (new_cluster) {
                qcow2_free_clusters(bs, new_cluster, s->cluster_size, false);
            }
            return ret;
        }
    }
    s->free_byte_offset = offset + size;
    if (!qcow2_offset_into_cluster(s, s->free_byte_offset)) {
        s->free_byte_offset = 0;
    }
    trace_qcow2_alloc_bytes(bs, size, offset);
    return offset;
}

int coroutine_fn qcow2_ref_clusters(BlockDriverState *bs, int64_t offset,
                                    int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t first = offset >> s->cluster_bits;
    int64_t last = (offset + bytes - 1) >> s->cluster_bits;

    return update_refcounts(bs, first, last - first + 1, 1);
}

/*
 * Drop one reference to each cluster of [@offset, @offset + @bytes) and
 * discard (with @pass_discard) those that become free.  The caller has
 * made sure that no L2 entry on disk still uses them.
 */
static int coroutine_fn drop_references(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes, bool pass_discard)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t first = offset >> s->cluster_bits;
    int64_t last = (offset + bytes - 1) >> s->cluster_bits;
    int ret;

    ret = update_refcounts(bs, first, last - first + 1, -1);
    if (ret < 0 || !pass_discard) {
        return ret;
    }
    for (int64_t c = first; c <= last; c++) {
        uint64_t refcount;

        ret = qcow2_get_refcount(bs, c, &refcount);
        if (ret < 0) {
            return ret;
        }
        if (refcount == 0) {
            /* Advisory, as in QEMU: a failed discard frees nothing less. */
            bdrv_co_pdiscard(bs->file, c << s->cluster_bits,
                             s->cluster_size);
        }
    }
    return 0;
}

int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, int64_t offset,
                                     int64_t bytes, bool pass_discard)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (bytes <= 0) {
        return 0;
    }
    ret = qcow2_cache_set_dependency(s->refcount_cache, s->l2_cache);
    if (ret < 0) {
        return ret;
    }
    return drop_references(bs, offset, bytes, pass_discard);
}

/*
 * Deferred frees: a cluster that an L2 update in the cache stopped using
 * keeps its reference until that update is on disk.  Until then the old
 * L2 entry may still be what a crash leaves behind, and handing the
 * cluster to another guest offset would let that offset's data appear
 * at the old one.  The reference is dropped (and the host range
 * discarded) by the next release, which first writes the L2 cache back
 * and flushes the image file.  A crash before the release leaks the
 * clusters, which is harmless.
 */
int coroutine_fn qcow2_release_deferred_frees(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) frees = NULL;
    int ret, result = 0;

    if (!s->deferred_frees->len) {
        return 0;
    }
    /* Every unlink queued so far is in the L2 cache or already written. */
    ret = qcow2_cache_flush(s->l2_cache);
    if (ret < 0) {
        return ret;
    }
    frees = g_steal_pointer(&s->deferred_frees);
    s->deferred_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2DeferredFree));
    s->deferred_free_bytes = 0;
    for (guint i = 0; i < frees->len; i++) {
        Qcow2DeferredFree *f = &g_array_index(frees, Qcow2DeferredFree, i);

        /* A failure leaks the clusters; release the others all the same. */
        ret = drop_references(bs, f->offset, f->bytes, f->pass_discard);
        if (ret < 0 && result == 0) {
            result = ret;
        }
    }
    return result;
}

/* Queue [@offset, @offset + @bytes) for the next release. */
static int coroutine_fn defer_free(BlockDriverState *bs, int64_t offset,
                                   int64_t bytes, bool pass_discard)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2DeferredFree f = {
        .offset = offset, .bytes = bytes, .pass_discard = pass_discard,
    };

    g_array_append_val(s->deferred_frees, f);
    s->deferred_free_bytes += ALIGN_UP(bytes, s->cluster_size);
    /* Without guest flushes, bound what the image grows meanwhile. */
    if (s->deferred_free_bytes >= QCOW2_DEFERRED_FREE_MAX_BYTES) {
        return qcow2_release_deferred_frees(bs);
    }
    return 0;
}

int coroutine_fn qcow2_free_l2e(BlockDriverState *bs, uint64_t l2e,
                                bool pass_discard)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t host, bytes;

    switch (qcow2_l2e_type(l2e, s->version)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return defer_free(bs, l2e & QCOW2_L2E_OFFSET_MASK, s->cluster_size,
                          pass_discard);
    case QCOW2_CLUSTER_COMPRESSED:
        qcow2_compressed_range(l2e, s->cluster_bits, &host, &bytes);
        return defer_free(bs, host, bytes, pass_discard);
    default:
        return 0;
    }
}
