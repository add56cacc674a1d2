/*
 * qcow2 metadata overlap check: the last line of defence against writing
 * over metadata in use.
 *
 * Refcounts decide which clusters are free, so a damaged image (a
 * metadata cluster with refcount 0) or a driver bug can hand a cluster
 * that still holds metadata to new data or new metadata.  Before every
 * write to the image file -- guest data, cache write-back, the header,
 * the L1 and refcount tables, bitmap directories, tables and data -- the
 * range is compared with every piece of metadata in use; a hit marks
 * the image corrupt (qcow2_signal_corruption()) and fails the write with
 * -EIO, and from then on nothing is written at all, so the damage found
 * never spreads.  QEMU does the same, with the same messages.
 *
 * What is compared (all of it in memory): the header cluster, the active
 * L1 table, each L2 table it names, the refcount table, each refcount
 * block it names, the snapshot table, each snapshot's L1 table and the
 * L2 tables those name (read at open), the bitmap directory and each
 * bitmap table.  Tables are whole clusters (L2 tables, refcount blocks)
 * or byte ranges (the others), and the written range is widened to whole
 * clusters first, since no two users may share a cluster.  A writer
 * names the kind it rewrites in place (an L2 table written back at its
 * own offset), which is then not compared; metadata written into newly
 * allocated clusters (a new L2 table, a new bitmap directory) is not
 * the metadata in use yet and is compared with everything.
 *
 * Costs: one linear scan of the L1 table, the used part of the refcount
 * table (up to its last nonzero entry: a table is mostly empty), the
 * snapshot list and the bitmap directory per write, and a binary search
 * of the inactive L2 tables; the same order of work as QEMU's "cached"
 * mode, which scans the whole L1 and refcount tables.  Bitmap data
 * clusters are not compared (that would take reading every bitmap
 * table).
 */
#include "block/qcow2/qcow2.h"
#include "qapi/qapi-types.h"

/* QEMU's names, bit by bit; the bitmap tables are blockd's own. */
static const char *const metadata_names[] = {
    "qcow2_header",
    "active L1 table",
    "active L2 table",
    "refcount table",
    "refcount block",
    "snapshot table",
    "inactive L1 table",
    "inactive L2 table",
    "bitmap directory",
    "bitmap table",
};

G_STATIC_ASSERT(G_N_ELEMENTS(metadata_names) == 10 &&
                QCOW2_MD_ALL == (1 << G_N_ELEMENTS(metadata_names)) - 1);

const char *qcow2_metadata_name(Qcow2Metadata kind)
{
    g_assert(kind && !(kind & (kind - 1)) && (kind & QCOW2_MD_ALL));
    return metadata_names[__builtin_ctz(kind)];
}

unsigned qcow2_overlap_checks_for_mode(int mode)
{
    switch (mode) {
    case QCOW2_OVERLAP_CHECK_MODE_NONE:
        return QCOW2_MD_NONE;
    case QCOW2_OVERLAP_CHECK_MODE_CONSTANT:
        /* The structures at fixed places, as in QEMU. */
        return QCOW2_MD_HEADER | QCOW2_MD_ACTIVE_L1 |
               QCOW2_MD_REFCOUNT_TABLE | QCOW2_MD_SNAPSHOT_TABLE |
               QCOW2_MD_BITMAP_DIRECTORY;
    default:
        /*
         * "cached" (the default) and "all": everything, since blockd
         * keeps even the inactive L2 tables in memory.
         */
        return QCOW2_MD_ALL;
    }
}

static bool overlaps(int64_t start, int64_t end, int64_t offset,
                     int64_t bytes)
{
    return bytes > 0 && offset < end && start < offset + bytes;
}

/*
 * Whether one of the cluster-sized tables named by @n entries (offset
 * bits @mask; 0: none) lies in the clusters [@start, @end), @start > 0.
 * This scan runs before every write, so its loop has no branch: one
 * unsigned compare per entry (an entry of 0 wraps around to a huge
 * distance from @start).
 */
static bool table_entries_hit(const uint64_t *entries, size_t n,
                              uint64_t mask, int64_t start, int64_t end)
{
    uint64_t len = end - start;
    bool hit = false;

    for (size_t i = 0; i < n; i++) {
        hit |= (entries[i] & mask) - (uint64_t)start < len;
    }
    return hit;
}

static bool inactive_l2_hit(BDRVQcow2State *s, int64_t start, int64_t end)
{
    size_t lo = 0, hi = s->nb_inactive_l2;

    /* The first table at or after @start. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->inactive_l2[mid] < start) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < s->nb_inactive_l2 && s->inactive_l2[lo] < end;
}

static bool inactive_l1_hit(BDRVQcow2State *s, int64_t start, int64_t end)
{
    if (!s->snapshot_l1) {
        return false;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (overlaps(start, end, s->snapshot_l1[i].offset,
                     (int64_t)s->snapshot_l1[i].size * 8)) {
            return true;
        }
    }
    return false;
}

Qcow2Metadata qcow2_metadata_overlap(BDRVQcow2State *s, unsigned checks,
                                     int64_t offset, int64_t bytes)
{
    int64_t start, end, table_start;

    if (bytes <= 0 || !checks) {
        return QCOW2_MD_NONE;
    }
    start = qcow2_start_of_cluster(s, offset);
    end = ALIGN_UP(offset + bytes, s->cluster_size);

    if ((checks & QCOW2_MD_HEADER) && start == 0) {
        return QCOW2_MD_HEADER;
    }
    /* No table lives in the header cluster (offset 0 means "none"). */
    table_start = MAX(start, s->cluster_size);
    if ((checks & QCOW2_MD_ACTIVE_L1) &&
        overlaps(start, end, s->l1_table_offset, (int64_t)s->l1_size * 8)) {
        return QCOW2_MD_ACTIVE_L1;
    }
    if ((checks & QCOW2_MD_ACTIVE_L2) && s->l1_table && table_start < end &&
        table_entries_hit(s->l1_table, s->l1_size, QCOW2_L1E_OFFSET_MASK,
                          table_start, end)) {
        return QCOW2_MD_ACTIVE_L2;
    }
    if ((checks & QCOW2_MD_REFCOUNT_TABLE) &&
        overlaps(start, end, s->refcount_table_offset,
                 (int64_t)s->refcount_table_size * 8)) {
        return QCOW2_MD_REFCOUNT_TABLE;
    }
    if ((checks & QCOW2_MD_REFCOUNT_BLOCK) && s->refcount_table &&
        table_start < end &&
        table_entries_hit(s->refcount_table, s->refcount_table_used,
                          QCOW2_REFT_OFFSET_MASK, table_start, end)) {
        return QCOW2_MD_REFCOUNT_BLOCK;
    }
    if ((checks & QCOW2_MD_SNAPSHOT_TABLE) && s->nb_snapshots &&
        overlaps(start, end, s->snapshots_offset, s->snapshots_size)) {
        return QCOW2_MD_SNAPSHOT_TABLE;
    }
    if ((checks & QCOW2_MD_INACTIVE_L1) && inactive_l1_hit(s, start, end)) {
        return QCOW2_MD_INACTIVE_L1;
    }
    if ((checks & QCOW2_MD_INACTIVE_L2) && inactive_l2_hit(s, start, end)) {
        return QCOW2_MD_INACTIVE_L2;
    }
    return qcow2_bitmaps_overlap(s, checks, start, end);
}

int coroutine_fn qcow2_check_metadata_overlap(BlockDriverState *bs,
                                              Qcow2Metadata in_place,
                                              int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Metadata hit;

    if (s->corrupt) {
        return -EIO;
    }
    hit = qcow2_metadata_overlap(s, s->overlap_checks & ~in_place, offset,
                                 bytes);
    if (hit) {
        return qcow2_signal_corruption(bs, offset, bytes,
                                       "Preventing invalid write on "
                                       "metadata (overlaps with %s)",
                                       qcow2_metadata_name(hit));
    }
    return 0;
}

int coroutine_fn qcow2_write_metadata(BlockDriverState *bs,
                                      Qcow2Metadata in_place,
                                      int64_t offset, int64_t bytes,
                                      const void *buf)
{
    int ret = qcow2_check_metadata_overlap(bs, in_place, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwrite(bs->file, offset, bytes, buf, 0);
}
