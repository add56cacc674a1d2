/*
 * qcow2 internal snapshots: reading the snapshot table at open, for the
 * metadata overlap check (qcow2-overlap.c).  blockd has no snapshot
 * operations; images with snapshots are read and written (shared
 * clusters and L2 tables are copied on write, qcow2-cluster.c), so what
 * the snapshots own must never be overwritten.
 *
 * On disk (qcow2 specification, "Snapshot table"): nb_snapshots entries
 * from snapshots_offset, each 8-byte aligned: the L1 table offset (u64),
 * its size in entries (u32), the ID and name lengths (u16 each), date,
 * VM clock and VM state size, the extra data size (u32), then the extra
 * data, the ID and the name.
 *
 * Open walks the entries for the table's size (QEMU's limits: at most
 * 1024 bytes of extra data per entry, 64 MiB in all) and each L1 table
 * location.  Read/write, it also reads every snapshot's L1 table once
 * and keeps the L2 tables they name as a sorted array of distinct
 * offsets (binary search per check); the L1 tables themselves are not
 * kept.  Cost at open: one small read per snapshot, and read/write one
 * read of each snapshot's L1 table.
 */
#include "block/qcow2/qcow2.h"

enum {
    SNAPSHOT_ENTRY_FIXED = 40,
    SNAPSHOT_MAX_EXTRA_DATA = 1024,             /* QEMU's limits */
    SNAPSHOT_MAX_TABLE_BYTES = 1024 * QCOW2_MAX_SNAPSHOTS,
};

void qcow2_snapshots_free(BDRVQcow2State *s)
{
    g_free(s->snapshot_l1);
    g_free(s->inactive_l2);
    s->snapshot_l1 = NULL;
    s->inactive_l2 = NULL;
    s->nb_inactive_l2 = 0;
}

static int compare_offsets(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* Add the L2 tables snapshot @i's L1 table names to @l2. */
static int coroutine_fn collect_l2_tables(BlockDriverState *bs, uint32_t i,
                                          int64_t file_len, GArray *l2,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2SnapshotL1 *sn = &s->snapshot_l1[i];
    int64_t bytes = (int64_t)sn->size * 8;
    g_autofree uint64_t *l1 = NULL;
    int ret;

    if (!sn->size) {
        return 0;
    }
    if (bytes > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "qcow2: snapshot %" PRIu32 ": Snapshot L1 table "
                   "too large", i);
        return -EFBIG;
    }
    if (qcow2_offset_into_cluster(s, sn->offset) || sn->offset <= 0 ||
        sn->offset > file_len - bytes) {
        error_setg(errp, "qcow2: snapshot %" PRIu32 ": Snapshot L1 table "
                   "offset invalid", i);
        return -EINVAL;
    }
    l1 = g_try_malloc(bytes);
    if (!l1) {
        error_setg(errp, "qcow2: could not allocate the L1 table of "
                   "snapshot %" PRIu32, i);
        return -ENOMEM;
    }
    ret = bdrv_co_pread(bs->file, sn->offset, bytes, l1, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the L1 table "
                         "of snapshot %" PRIu32, i);
        return ret;
    }
    for (uint32_t j = 0; j < sn->size; j++) {
        int64_t table = GUINT64_FROM_BE(l1[j]) & QCOW2_L1E_OFFSET_MASK;

        if (table) {
            table = qcow2_start_of_cluster(s, table);
            g_array_append_val(l2, table);
        }
    }
    return 0;
}

/* Sort @l2 and drop duplicates into s->inactive_l2. */
static void set_inactive_l2(BDRVQcow2State *s, GArray *l2)
{
    size_t n = 0;

    g_array_sort(l2, compare_offsets);
    for (guint i = 0; i < l2->len; i++) {
        int64_t table = g_array_index(l2, int64_t, i);

        if (n == 0 || g_array_index(l2, int64_t, n - 1) != table) {
            g_array_index(l2, int64_t, n++) = table;
        }
    }
    s->nb_inactive_l2 = n;
    s->inactive_l2 = (int64_t *)g_array_free(l2, FALSE);
}

int coroutine_fn qcow2_read_snapshots(BlockDriverState *bs, int64_t file_len,
                                      bool writable, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t pos = s->snapshots_offset;
    g_autoptr(GArray) l2 = NULL;
    int ret;

    s->snapshots_size = 0;
    if (!s->nb_snapshots) {
        return 0;
    }
    s->snapshot_l1 = g_new0(Qcow2SnapshotL1, s->nb_snapshots);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint8_t e[SNAPSHOT_ENTRY_FIXED];
        uint32_t extra;
        int64_t len;

        if (pos > file_len - SNAPSHOT_ENTRY_FIXED) {
            error_setg(errp, "qcow2: snapshot table entry %" PRIu32 " lies "
                       "beyond the end of the image file", i);
            return -EINVAL;
        }
        ret = bdrv_co_pread(bs->file, pos, sizeof(e), e, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to read snapshot table");
            return ret;
        }
        s->snapshot_l1[i].offset = qcow2_get_be64(e);
        s->snapshot_l1[i].size = qcow2_get_be32(e + 8);
        extra = qcow2_get_be32(e + 36);
        if (extra > SNAPSHOT_MAX_EXTRA_DATA) {
            error_setg(errp, "Too much extra metadata in snapshot table "
                       "entry %" PRIu32, i);
            return -EFBIG;
        }
        len = SNAPSHOT_ENTRY_FIXED + extra + qcow2_get_be16(e + 12) +
              qcow2_get_be16(e + 14);
        /* The padding of the last entry need not be in the file. */
        if (pos + len > file_len) {
            error_setg(errp, "qcow2: snapshot table entry %" PRIu32 " lies "
                       "beyond the end of the image file", i);
            return -EINVAL;
        }
        pos += ALIGN_UP(len, 8);
        if (pos - s->snapshots_offset > SNAPSHOT_MAX_TABLE_BYTES) {
            error_setg(errp, "Snapshot table is too big");
            return -EFBIG;
        }
    }
    s->snapshots_size = pos - s->snapshots_offset;
    if (!writable) {
        return 0;           /* nothing is written: no overlap checks */
    }
    l2 = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        ret = collect_l2_tables(bs, i, file_len, l2, errp);
        if (ret < 0) {
            return ret;
        }
    }
    set_inactive_l2(s, g_steal_pointer(&l2));
    return 0;
}
