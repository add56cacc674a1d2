/*
 * The "qcow2" format driver: opening, header parsing and validation,
 * header extensions, the backing node and the driver table.
 *
 * Open reads the header (big-endian, version 2 or 3) and validates every
 * field against the image file's size and the implementation limits
 * before anything else is read, so a damaged image is refused with a
 * message instead of being trusted; QEMU's wording is used where QEMU
 * refuses the same damage.  Then the header extensions (backing format,
 * feature names, bitmaps (qcow2-bitmap.c); every other one is left
 * alone), the backing file name, the L1 table and the refcount table
 * are read and their entries checked.  Last, the bitmap directory is
 * checked, the bitmaps are loaded and, read/write, flagged in_use.
 *
 * The header is never rewritten as a whole: the driver changes only
 * single fields in place (incompatible and autoclear feature bits, the
 * refcount table location), each a write within one sector, so
 * extensions it does not know survive untouched (only the bitmaps code
 * adds or removes an extension).  Before the first write to the image
 * the autoclear bits other than "bitmaps" are cleared, as the
 * specification requires from a program that does not maintain the
 * features they stand for; bitmaps are maintained (qcow2-bitmap.c).
 *
 * blockd does not set the dirty bit (lazy refcounts): metadata writes
 * are ordered so that the image is always consistent up to leaked
 * clusters (docs/devel/qcow2.rst).  An image found with the dirty bit
 * set is repaired when opened read/write (qcow2-repair.c), as QEMU does;
 * read-only opens use it as it is.
 */
#include "block/qcow2/qcow2.h"
#include "block/qcow2-bitmap.h"
#include "qapi/qapi-events.h"
#include "qapi/qapi-types.h"

#include <fcntl.h>

/* The fixed part of the header, as on disk (big-endian). */
typedef struct Qcow2Header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    /* Version 3 */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
} __attribute__((packed)) Qcow2Header;

/* Default cache sizes (bytes), as QEMU 7.2 on Linux. */
#define QCOW2_DEFAULT_L2_CACHE_MAX  (32 * 1024 * 1024)
/* blockd's cap on the refcount cache: 1 TiB of 64 KiB clusters. */
#define QCOW2_MAX_REFCOUNT_CACHE    (32 * 1024 * 1024)
enum {
    QCOW2_MIN_L2_CACHE_TABLES = 2,
    QCOW2_MIN_REFCOUNT_CACHE_TABLES = 4,
};

int coroutine_fn qcow2_write_header_u64(BlockDriverState *bs, int offset,
                                        uint64_t value)
{
    uint64_t be = GUINT64_TO_BE(value);

    return qcow2_write_metadata(bs, QCOW2_MD_HEADER, offset, 8, &be);
}

int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs,
                                         int64_t offset, int64_t size,
                                         const char *fmt, ...)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (s->corrupt) {
        return -EIO;
    }
    s->corrupt = true;
    /*
     * Fatal: the image is marked corrupt and no longer written.  The
     * device name is empty, as for QEMU's nodes that have no named
     * BlockBackend (all of them, in the storage daemon).
     */
    qapi_event_send_block_image_corrupted("", bs->node_name,
                                          msg, offset >= 0, offset,
                                          size >= 0, size, !bs->read_only);
    if (bs->read_only) {
        error_report("qcow2: Image is corrupt: %s; further corruption "
                     "events will be suppressed", msg);
        return -EIO;
    }
    error_report("qcow2: Marking image as corrupt: %s; further corruption "
                 "events will be suppressed", msg);
    s->incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    if (s->version >= 3) {
        /* The last write of a corrupt image: past the overlap check. */
        uint64_t be = GUINT64_TO_BE(s->incompatible_features);

        if (bdrv_co_pwrite(bs->file, QCOW2_HDR_INCOMPAT, 8, &be, 0) == 0) {
            bdrv_co_flush(bs->file->bs);
        }
    }
    return -EIO;
}

static bool ranges_overlap(int64_t a, int64_t alen, int64_t b, int64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* "Unsupported qcow2 feature(s): ..." from the feature name table. */
static void report_unsupported_features(const uint8_t *table, size_t len,
                                        uint64_t mask, Error **errp)
{
    g_autoptr(GString) names = g_string_new(NULL);

    for (size_t i = 0; i + 48 <= len; i += 48) {
        if (table[i] == 0 && table[i + 1] < 64 &&
            (mask & (1ULL << table[i + 1]))) {
            g_autofree char *name = g_strndup((const char *)table + i + 2,
                                              46);

            g_string_append_printf(names, "%s%s", names->len ? ", " : "",
                                   name);
            mask &= ~(1ULL << table[i + 1]);
        }
    }
    if (mask) {
        g_string_append_printf(names, "%sUnknown incompatible feature: %"
                               PRIx64, names->len ? ", " : "", mask);
    }
    error_setg(errp, "Unsupported qcow2 feature(s): %s", names->str);
}

/*
 * Validate a table of @entries entries of @entry_len bytes at @offset:
 * QEMU's checks and messages ("<name> too large", "<name> offset
 * invalid"), then ours against the file size and the header cluster.
 */
static bool validate_table(BDRVQcow2State *s, uint64_t offset,
                           uint64_t entries, size_t entry_len,
                           uint64_t max_bytes, const char *name,
                           int64_t file_len, Error **errp)
{
    uint64_t bytes;

    if (entries > max_bytes / entry_len) {
        error_setg(errp, "%s too large", name);
        return false;
    }
    bytes = entries * entry_len;
    if (offset > INT64_MAX - bytes || qcow2_offset_into_cluster(s, offset)) {
        error_setg(errp, "%s offset invalid", name);
        return false;
    }
    if (bytes && offset == 0) {
        error_setg(errp, "qcow2: %s overlaps the image header", name);
        return false;
    }
    if (bytes && offset + bytes > (uint64_t)file_len) {
        error_setg(errp, "qcow2: %s (offset 0x%" PRIx64 ", %" PRIu64
                   " bytes) lies beyond the end of the image file (%"
                   PRId64 " bytes); the file may be truncated", name,
                   offset, bytes, file_len);
        return false;
    }
    return true;
}

/* Parse the header extensions in [@start, @end) of the header cluster. */
static bool read_extensions(BlockDriverState *bs, const uint8_t *hdr,
                            size_t start, size_t end, uint64_t incompat,
                            Error **errp)
{
    const uint8_t *features = NULL;
    size_t features_len = 0;
    size_t pos = start;

    while (pos + 8 <= end) {
        uint32_t type, len;

        memcpy(&type, hdr + pos, 4);
        memcpy(&len, hdr + pos + 4, 4);
        type = GUINT32_FROM_BE(type);
        len = GUINT32_FROM_BE(len);
        pos += 8;
        if (type == QCOW2_EXT_END) {
            break;
        }
        if (len > end - pos) {
            error_setg(errp, "qcow2: header extension 0x%08" PRIx32
                       " too large (%" PRIu32 " bytes)", type, len);
            return false;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len > QCOW2_MAX_BACKING_NAME) {
                error_setg(errp, "ERROR: ext_backing_format: len=%" PRIu32
                           " too large (>=%d)", len,
                           QCOW2_MAX_BACKING_NAME + 1);
                return false;
            }
            g_free(bs->backing_format);
            bs->backing_format = g_strndup((const char *)hdr + pos, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            features = hdr + pos;
            features_len = len;
            break;
        case QCOW2_EXT_BITMAPS:
            if (!qcow2_bitmaps_read_ext(bs, hdr + pos, len, pos, errp)) {
                return false;
            }
            break;
        case QCOW2_EXT_BLOCKD_CRASH_SAFE:
            qcow2_crash_safe_read_ext(bs, hdr + pos, len);
            break;
        default:
            /* Crypto, data file, unknown: left as they are. */
            break;
        }
        pos += ALIGN_UP((size_t)len, 8);
    }
    if (incompat & ~QCOW2_INCOMPAT_SUPPORTED) {
        report_unsupported_features(features, features_len,
                                    incompat & ~QCOW2_INCOMPAT_SUPPORTED,
                                    errp);
        return false;
    }
    return true;
}

static void qcow2_child_perm(BlockDriverState *bs, BdrvChild *child,
                             uint64_t parent_perm, uint64_t parent_shared,
                             uint64_t *nperm, uint64_t *nshared)
{
    if (child->role & BDRV_CHILD_COW) {
        *nperm = BLK_PERM_CONSISTENT_READ;
        *nshared = BLK_PERM_ALL;
        return;
    }
    /*
     * Metadata may be written whenever the node is writable; as in QEMU,
     * nobody else may ever write or resize the file under it, read-only
     * or not (a writer would change the metadata this node trusts).
     */
    *nperm = BLK_PERM_CONSISTENT_READ;
    *nshared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
    if (!bs->read_only) {
        *nperm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
    }
}

/*
 * The L2 and refcount cache sizes in bytes, as QEMU 7.2 derives them
 * from cache-size, l2-cache-size and refcount-cache-size (already
 * checked against each other).  @disk_l2: the bytes of L2 tables the
 * whole disk needs.  l2-cache-size (and its default) is a maximum that
 * never exceeds @disk_l2; an L2 size derived from cache-size is not.
 */
static void qcow2_cache_sizes(BDRVQcow2State *s, BlockdevOptionsQcow2 *opts,
                              int64_t disk_l2, int64_t *l2_cache,
                              int64_t *rc_cache)
{
    int64_t min_rc = QCOW2_MIN_REFCOUNT_CACHE_TABLES * s->cluster_size;
    int64_t l2_max = MIN(disk_l2, opts->has_l2_cache_size
                                  ? opts->l2_cache_size
                                  : QCOW2_DEFAULT_L2_CACHE_MAX);

    if (!opts->has_cache_size) {
        *l2_cache = l2_max;
        *rc_cache = opts->has_refcount_cache_size
                    ? opts->refcount_cache_size : min_rc;
    } else if (opts->has_l2_cache_size) {
        *l2_cache = l2_max;
        *rc_cache = opts->cache_size - *l2_cache;
    } else if (opts->has_refcount_cache_size) {
        *rc_cache = opts->refcount_cache_size;
        *l2_cache = opts->cache_size - *rc_cache;
    } else if (opts->cache_size >= disk_l2 + min_rc) {
        /* As much as the disk can use to L2, the rest to refcounts */
        *l2_cache = disk_l2;
        *rc_cache = opts->cache_size - disk_l2;
    } else {
        *rc_cache = MIN(opts->cache_size, min_rc);
        *l2_cache = opts->cache_size - *rc_cache;
    }
}

static bool qcow2_parse_options(BlockDriverState *bs,
                                BlockdevOptionsQcow2 *opts,
                                int64_t *l2_cache, int64_t *rc_cache,
                                Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t disk_l2 = ALIGN_UP(DIV_ROUND_UP(bs->total_bytes,
                                            s->cluster_size) * 8,
                               s->cluster_size);

    if (opts->has_lazy_refcounts && opts->lazy_refcounts) {
        error_setg(errp, "qcow2: lazy-refcounts=on is not supported");
        return false;
    }
    if (opts->data_file) {
        error_setg(errp, "qcow2: external data files (data-file) are not "
                   "supported");
        return false;
    }
    s->pass_discard_request = opts->has_pass_discard_request
                              ? opts->pass_discard_request
                              : bs->discard_unmap;
    s->pass_discard_other = opts->has_pass_discard_other &&
                            opts->pass_discard_other;
    s->overlap_checks = qcow2_overlap_checks_for_mode(
        opts->has_overlap_check ? opts->overlap_check
                                : QCOW2_OVERLAP_CHECK_MODE_CACHED);

    /* QEMU's checks, in QEMU's order */
    if (!bdrv_check_size_option("cache-size", opts->has_cache_size,
                                opts->cache_size, errp) ||
        !bdrv_check_size_option("l2-cache-size", opts->has_l2_cache_size,
                                opts->l2_cache_size, errp) ||
        !bdrv_check_size_option("l2-cache-entry-size",
                                opts->has_l2_cache_entry_size,
                                opts->l2_cache_entry_size, errp) ||
        !bdrv_check_size_option("refcount-cache-size",
                                opts->has_refcount_cache_size,
                                opts->refcount_cache_size, errp)) {
        return false;
    }
    if (opts->has_cache_size && opts->has_l2_cache_size &&
        opts->has_refcount_cache_size) {
        error_setg(errp, "cache-size, l2-cache-size and refcount-cache-size "
                   "may not be set at the same time");
        return false;
    }
    if (opts->has_cache_size && opts->has_l2_cache_size &&
        opts->l2_cache_size > opts->cache_size) {
        error_setg(errp, "l2-cache-size may not exceed cache-size");
        return false;
    }
    if (opts->has_cache_size && opts->has_refcount_cache_size &&
        opts->refcount_cache_size > opts->cache_size) {
        error_setg(errp, "refcount-cache-size may not exceed cache-size");
        return false;
    }
    if (opts->has_l2_cache_entry_size &&
        (opts->l2_cache_entry_size < 512 ||
         opts->l2_cache_entry_size > s->cluster_size ||
         (opts->l2_cache_entry_size & (opts->l2_cache_entry_size - 1)))) {
        error_setg(errp, "L2 cache entry size must be a power of two "
                   "between 512 and the cluster size (%" PRId64 ")",
                   s->cluster_size);
        return false;
    }
    if (opts->has_l2_cache_entry_size &&
        opts->l2_cache_entry_size != s->cluster_size) {
        error_setg(errp, "qcow2: l2-cache-entry-size must be the cluster "
                   "size (%" PRId64 ")", s->cluster_size);
        return false;
    }
    if (opts->has_cache_clean_interval &&
        (uint64_t)opts->cache_clean_interval > UINT_MAX) {
        error_setg(errp, "Cache clean interval too big");
        return false;
    }
    if (opts->has_cache_clean_interval && opts->cache_clean_interval) {
        error_setg(errp, "qcow2: cache-clean-interval is not supported "
                   "(only 0)");
        return false;
    }
    qcow2_cache_sizes(s, opts, disk_l2, l2_cache, rc_cache);
    /* QEMU's limits, on the sizes as asked (in tables) */
    if (*l2_cache / s->cluster_size > INT_MAX) {
        error_setg(errp, "L2 cache size too big");
        return false;
    }
    if (*rc_cache / s->cluster_size > INT_MAX) {
        error_setg(errp, "Refcount cache size too big");
        return false;
    }
    /*
     * blockd lets neither cache grow past what the image can use: an L2
     * cache past the whole disk's tables, or a refcount cache past
     * QCOW2_MAX_REFCOUNT_CACHE, would only hold memory.  QEMU allocates
     * the whole size (and fails the open where it cannot).
     */
    *l2_cache = MIN(*l2_cache, disk_l2);
    *rc_cache = MIN(*rc_cache, QCOW2_MAX_REFCOUNT_CACHE);
    return true;
}

static void qcow2_free_state(BDRVQcow2State *s)
{
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    s->l2_cache = s->refcount_cache = NULL;
    g_free(s->l1_table);
    g_free(s->refcount_table);
    if (s->deferred_frees) {
        /* Not released (the flush at close failed or was off): leaked. */
        g_array_free(s->deferred_frees, TRUE);
        s->deferred_frees = NULL;
    }
    qcow2_bitmaps_free(s);
    qcow2_crash_safe_free(s);
    qcow2_snapshots_free(s);
    s->l1_table = NULL;
    s->refcount_table = NULL;
}

static int coroutine_fn qcow2_read_l1(BlockDriverState *bs, int64_t file_len,
                                      Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    s->l1_table = g_try_new0(uint64_t, MAX(s->l1_size, 1));
    if (!s->l1_table) {
        error_setg(errp, "Could not allocate L1 table");
        return -ENOMEM;
    }
    ret = bdrv_co_pread(bs->file, s->l1_table_offset,
                        (int64_t)s->l1_size * 8, s->l1_table, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read L1 table");
        return ret;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = (s->l1_table[i] = GUINT64_FROM_BE(s->l1_table[i])) &
                      QCOW2_L1E_OFFSET_MASK;

        if (!l2) {
            continue;
        }
        if (qcow2_offset_into_cluster(s, l2)) {
            error_setg(errp, "qcow2: L2 table offset 0x%" PRIx64 " (L1 "
                       "entry %" PRIu32 ") is not cluster aligned", l2, i);
            return -EINVAL;
        }
        if ((int64_t)l2 > file_len - s->cluster_size) {
            error_setg(errp, "qcow2: L2 table 0x%" PRIx64 " (L1 entry %"
                       PRIu32 ") lies beyond the end of the image file (%"
                       PRId64 " bytes); the file may be truncated", l2, i,
                       file_len);
            return -EINVAL;
        }
        if (ranges_overlap(l2, s->cluster_size, s->l1_table_offset,
                           (int64_t)s->l1_size * 8) ||
            ranges_overlap(l2, s->cluster_size, s->refcount_table_offset,
                           (int64_t)s->refcount_table_size * 8) ||
            l2 < (uint64_t)s->cluster_size) {
            error_setg(errp, "qcow2: L2 table 0x%" PRIx64 " (L1 entry %"
                       PRIu32 ") overlaps other metadata", l2, i);
            return -EINVAL;
        }
    }
    return 0;
}

/* Parse and check the header; fills the fixed state fields. */
static int coroutine_fn qcow2_read_header(BlockDriverState *bs,
                                          int64_t file_len, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *buf = NULL;
    Qcow2Header h = { 0 };
    int64_t first_cluster;
    uint64_t l2_coverage, l1_needed, reftable_entries;
    size_t ext_end;
    int ret;

    if (file_len < QCOW2_V2_HEADER_LEN) {
        if (file_len >= 4) {
            uint32_t magic;

            ret = bdrv_co_pread(bs->file, 0, 4, &magic, 0);
            if (ret == 0 && GUINT32_FROM_BE(magic) != QCOW2_MAGIC) {
                error_setg(errp, "Image is not in qcow2 format");
                return -EINVAL;
            }
        }
        error_setg(errp, "qcow2 header too short");
        return -EINVAL;
    }
    ret = bdrv_co_pread(bs->file, 0, MIN(file_len, (int64_t)sizeof(h)), &h,
                        0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read qcow2 header");
        return ret;
    }
    if (GUINT32_FROM_BE(h.magic) != QCOW2_MAGIC) {
        error_setg(errp, "Image is not in qcow2 format");
        return -EINVAL;
    }
    s->version = GUINT32_FROM_BE(h.version);
    if (s->version < 2 || s->version > 3) {
        error_setg(errp, "Unsupported qcow2 version %d", s->version);
        return -ENOTSUP;
    }
    s->cluster_bits = GUINT32_FROM_BE(h.cluster_bits);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "Unsupported cluster size: 2^%i", s->cluster_bits);
        return -EINVAL;
    }
    s->cluster_size = 1LL << s->cluster_bits;
    if (s->version == 2) {
        s->refcount_order = 4;
        s->header_length = QCOW2_V2_HEADER_LEN;
        s->incompatible_features = 0;
        s->compatible_features = 0;
        s->autoclear_features = 0;
    } else {
        s->header_length = GUINT32_FROM_BE(h.header_length);
        if (s->header_length < QCOW2_V3_HEADER_LEN ||
            file_len < QCOW2_V3_HEADER_LEN) {
            error_setg(errp, "qcow2 header too short");
            return -EINVAL;
        }
        if (s->header_length > s->cluster_size) {
            error_setg(errp, "qcow2 header exceeds cluster size");
            return -EINVAL;
        }
        s->refcount_order = GUINT32_FROM_BE(h.refcount_order);
        s->incompatible_features = GUINT64_FROM_BE(h.incompatible_features);
        s->compatible_features = GUINT64_FROM_BE(h.compatible_features);
        s->autoclear_features = GUINT64_FROM_BE(h.autoclear_features);
    }
    h.backing_file_offset = GUINT64_FROM_BE(h.backing_file_offset);
    if (h.backing_file_offset > (uint64_t)s->cluster_size) {
        error_setg(errp, "Invalid backing file offset");
        return -EINVAL;
    }

    /* The whole header cluster: extensions and the backing file name. */
    first_cluster = MIN(file_len, s->cluster_size);
    buf = g_malloc0(s->cluster_size);
    ret = bdrv_co_pread(bs->file, 0, first_cluster, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read qcow2 header");
        return ret;
    }
    ext_end = h.backing_file_offset ? (size_t)h.backing_file_offset
                                    : (size_t)first_cluster;
    if (!read_extensions(bs, buf, s->header_length,
                         MIN(ext_end, (size_t)first_cluster),
                         s->incompatible_features, errp)) {
        return -ENOTSUP;
    }
    if (s->header_length > QCOW2_V3_HEADER_LEN &&
        (s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
        buf[QCOW2_V3_HEADER_LEN] > 1) {
        error_setg(errp, "qcow2: unknown compression type %u",
                   buf[QCOW2_V3_HEADER_LEN]);
        return -ENOTSUP;
    }
    s->compression_type = s->header_length > QCOW2_V3_HEADER_LEN &&
                          (s->incompatible_features &
                           QCOW2_INCOMPAT_COMPRESSION)
                          ? buf[QCOW2_V3_HEADER_LEN] : 0;
    if ((s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) &&
        !bs->read_only) {
        error_setg(errp, "qcow2: Image is corrupt; cannot be opened "
                   "read/write");
        return -EACCES;
    }
    if (s->refcount_order > 6) {
        error_setg(errp, "Reference count entry width too large; may not "
                   "exceed 64 bits");
        return -EINVAL;
    }
    s->refcount_max = s->refcount_order == 6
                      ? UINT64_MAX : (1ULL << (1 << s->refcount_order)) - 1;
    s->refcount_block_bits = s->cluster_bits + 3 - s->refcount_order;
    s->refcount_block_entries = 1LL << s->refcount_block_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2_entries = 1LL << s->l2_bits;

    h.crypt_method = GUINT32_FROM_BE(h.crypt_method);
    if (h.crypt_method > 2) {
        error_setg(errp, "Unsupported encryption method %" PRIu32,
                   h.crypt_method);
        return -EINVAL;
    }
    if (h.crypt_method) {
        error_setg(errp, "qcow2: encrypted images are not supported");
        return -ENOTSUP;
    }

    /* Virtual size and L1 table: QEMU's limits and messages. */
    bs->total_bytes = GUINT64_FROM_BE(h.size);
    l2_coverage = (uint64_t)s->cluster_size << s->l2_bits;
    l1_needed = bs->total_bytes / l2_coverage +
                (bs->total_bytes % l2_coverage != 0);
    if (bs->total_bytes < 0 || l1_needed > INT_MAX) {
        error_setg(errp, "Image is too big");
        return -EFBIG;
    }
    s->l1_size = GUINT32_FROM_BE(h.l1_size);
    s->l1_table_offset = GUINT64_FROM_BE(h.l1_table_offset);

    reftable_entries = (uint64_t)GUINT32_FROM_BE(h.refcount_table_clusters) *
                       (s->cluster_size / 8);
    s->refcount_table_offset = GUINT64_FROM_BE(h.refcount_table_offset);
    if (!validate_table(s, s->refcount_table_offset, reftable_entries, 8,
                        QCOW2_MAX_REFTABLE_BYTES, "Reference count table",
                        file_len, errp)) {
        return -EINVAL;
    }
    if (!reftable_entries) {
        error_setg(errp, "qcow2: the image has no refcount table");
        return -EINVAL;
    }
    s->refcount_table_size = reftable_entries;

    s->nb_snapshots = GUINT32_FROM_BE(h.nb_snapshots);
    s->snapshots_offset = GUINT64_FROM_BE(h.snapshots_offset);
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "Snapshot table too large");
        return -EFBIG;
    }
    if (s->nb_snapshots &&
        (qcow2_offset_into_cluster(s, s->snapshots_offset) ||
         s->snapshots_offset <= 0 || s->snapshots_offset >= file_len)) {
        error_setg(errp, "Snapshot table offset invalid");
        return -EINVAL;
    }

    if (!validate_table(s, s->l1_table_offset, s->l1_size, 8,
                        QCOW2_MAX_L1_BYTES, "Active L1 table", file_len,
                        errp)) {
        return -EINVAL;
    }
    if (s->l1_size < l1_needed) {
        error_setg(errp, "L1 table is too small");
        return -EINVAL;
    }
    if (s->l1_size && ranges_overlap(s->l1_table_offset,
                                     (int64_t)s->l1_size * 8,
                                     s->refcount_table_offset,
                                     (int64_t)s->refcount_table_size * 8)) {
        error_setg(errp, "qcow2: the active L1 table overlaps the refcount "
                   "table");
        return -EINVAL;
    }

    /* Backing file name, after the extensions in the header cluster. */
    if (h.backing_file_offset) {
        uint32_t len = GUINT32_FROM_BE(h.backing_file_size);

        if (len > QCOW2_MAX_BACKING_NAME) {
            error_setg(errp, "Backing file name too long");
            return -EINVAL;
        }
        if (h.backing_file_offset + len > (uint64_t)first_cluster) {
            error_setg(errp, "Invalid backing file offset");
            return -EINVAL;
        }
        bs->backing_file = g_strndup((const char *)buf +
                                    h.backing_file_offset, len);
    }
    return 0;
}

static int coroutine_fn qcow2_open(BlockDriverState *bs,
                                   BlockdevOptions *options, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BlockdevOptionsQcow2 *opts = &options->u.qcow2;
    int64_t file_len, l2_cache, rc_cache;
    int ret;

    co_mutex_init(&s->lock);
    g_queue_init(&s->allocs);
    g_queue_init(&s->inflight);
    if (!bdrv_open_child(bs, opts->file, "file",
                         BDRV_CHILD_METADATA | BDRV_CHILD_DATA |
                         BDRV_CHILD_PRIMARY, errp)) {
        return -EINVAL;
    }
    file_len = bdrv_getlength(bs->file->bs);

    ret = qcow2_read_header(bs, file_len, errp);
    if (ret < 0) {
        goto fail;
    }
    if (!qcow2_parse_options(bs, opts, &l2_cache, &rc_cache, errp)) {
        ret = -EINVAL;
        goto fail;
    }
    ret = qcow2_refcount_init(bs, file_len, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_read_l1(bs, file_len, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_read_snapshots(bs, file_len, !bs->read_only, errp);
    if (ret < 0) {
        goto fail;
    }
    /* Dirty (lazy refcounts), read/write: rebuild the refcounts. */
    ret = qcow2_repair_dirty(bs, file_len, errp);
    if (ret < 0) {
        goto fail;
    }
    s->l2_cache = qcow2_cache_create(bs, QCOW2_MD_ACTIVE_L2,
                                     MAX(l2_cache / s->cluster_size,
                                         QCOW2_MIN_L2_CACHE_TABLES),
                                     s->cluster_size);
    s->refcount_cache = qcow2_cache_create(bs, QCOW2_MD_REFCOUNT_BLOCK,
                                           MAX(rc_cache / s->cluster_size,
                                               QCOW2_MIN_REFCOUNT_CACHE_TABLES),
                                           s->cluster_size);
    if (!s->l2_cache || !s->refcount_cache) {
        error_setg(errp, "Could not allocate metadata caches");
        ret = -ENOMEM;
        goto fail;
    }
    /* Last: read/write, it flags bitmaps in_use on disk. */
    ret = qcow2_bitmaps_open(bs, file_len, errp);
    if (ret < 0) {
        goto fail;
    }
    bs->bl.request_alignment = 1;
    return 0;

fail:
    qcow2_free_state(s);
    return ret;
}

static void qcow2_close(BlockDriverState *bs)
{
    qcow2_bitmaps_close(bs);
    qcow2_free_state(bs->opaque);
}

/*
 * Free the clusters whose unlink was pending (this writes back the L2
 * cache and flushes the file first, if there are any), then write back
 * the caches.  Each cache writes its dependency first, so the order of
 * the two calls does not matter; the core then flushes the image file.
 */
static int coroutine_fn qcow2_co_flush(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_release_deferred_frees(bs);
    if (ret == 0) {
        ret = qcow2_cache_write(s->l2_cache);
    }
    if (ret == 0) {
        ret = qcow2_cache_write(s->refcount_cache);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

static int64_t qcow2_get_allocated_file_size(BlockDriverState *bs)
{
    const BlockDriver *drv = bs->file->bs->drv;

    if (!drv->bdrv_get_allocated_file_size) {
        return -ENOTSUP;
    }
    return drv->bdrv_get_allocated_file_size(bs->file->bs);
}

static int qcow2_probe(const uint8_t *buf, int buf_size)
{
    if (buf_size >= 8 && qcow2_get_be32(buf) == QCOW2_MAGIC &&
        qcow2_get_be32(buf + 4) >= 2) {
        return 100;
    }
    return 0;
}

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;

    bdi->cluster_size = s->cluster_size;
    bdi->is_dirty = s->incompatible_features & QCOW2_INCOMPAT_DIRTY;
    return 0;
}

static Qcow2BitmapInfoList *qcow2_bitmap_info_list(BlockDriverState *bs)
{
    GList *stored = qcow2_list_bitmaps(bs);
    Qcow2BitmapInfoList *head = NULL, **tail = &head;

    for (GList *l = stored; l; l = l->next) {
        Qcow2StoredBitmap *b = l->data;
        Qcow2BitmapInfo *info = g_new0(Qcow2BitmapInfo, 1);
        Qcow2BitmapInfoFlagsList **flags = &info->flags;

        info->name = g_strdup(b->name);
        info->granularity = b->granularity;
        if (b->in_use) {
            *flags = g_new0(Qcow2BitmapInfoFlagsList, 1);
            (*flags)->value = QCOW2_BITMAP_INFO_FLAGS_IN_USE;
            flags = &(*flags)->next;
        }
        if (b->auto_enabled) {
            *flags = g_new0(Qcow2BitmapInfoFlagsList, 1);
            (*flags)->value = QCOW2_BITMAP_INFO_FLAGS_AUTO;
        }
        *tail = g_new0(Qcow2BitmapInfoList, 1);
        (*tail)->value = info;
        tail = &(*tail)->next;
    }
    g_list_free_full(stored, (GDestroyNotify)qcow2_stored_bitmap_free);
    return head;
}

/* What QEMU 7.2 reports: v3 fields only for compat 1.1 images. */
static ImageInfoSpecific *qcow2_get_specific_info(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    ImageInfoSpecific *spec = g_new0(ImageInfoSpecific, 1);
    ImageInfoSpecificQCow2 *info = g_new0(ImageInfoSpecificQCow2, 1);

    spec->type = IMAGE_INFO_SPECIFIC_KIND_QCOW2;
    spec->u.qcow2.data = info;
    info->refcount_bits = 1 << s->refcount_order;
    info->compression_type = s->compression_type;
    if (s->version < 3) {
        info->compat = g_strdup("0.10");
        return spec;
    }
    info->compat = g_strdup("1.1");
    info->has_lazy_refcounts = true;
    info->lazy_refcounts = s->compatible_features &
                           QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->has_corrupt = true;
    info->corrupt = s->incompatible_features & QCOW2_INCOMPAT_CORRUPT;
    info->has_extended_l2 = true;
    info->extended_l2 = false;      /* such images are refused at open */
    info->bitmaps = qcow2_bitmap_info_list(bs);
    return spec;
}

/*
 * blockdev-reopen switching read-only.
 *
 * To read-only: everything is written back while the file child is still
 * writable -- the caches, and the persistent bitmaps with in_use cleared,
 * as at close -- and the bitmaps become read-only at commit.  An abort
 * leaves the node read/write, so it flags the bitmaps in_use again.
 *
 * To read/write: the checks of a read/write open run first (a corrupt
 * image, or one left dirty by lazy refcounts, is refused; the snapshots'
 * L2 tables are collected for the overlap check).  The bitmaps are
 * flagged in_use only once the file child is writable (commit_post),
 * and before any guest write: the node is still drained then.
 */
typedef struct Qcow2Reopen {
    BlockDriverState *bs;
    Error **errp;
    int ret;
} Qcow2Reopen;

static void coroutine_fn qcow2_reopen_ro_entry(void *opaque)
{
    Qcow2Reopen *r = opaque;

    r->ret = bdrv_co_flush(r->bs);
    if (r->ret < 0) {
        error_setg_errno(r->errp, -r->ret, "qcow2: could not flush '%s'",
                         r->bs->filename);
        return;
    }
    r->ret = qcow2_bitmaps_store_all(r->bs, r->errp);
}

static void coroutine_fn qcow2_reopen_rw_entry(void *opaque)
{
    Qcow2Reopen *r = opaque;
    BDRVQcow2State *s = r->bs->opaque;
    int64_t file_len = bdrv_getlength(r->bs->file->bs);

    qcow2_snapshots_free(s);
    r->ret = file_len < 0 ? file_len
             : qcow2_read_snapshots(r->bs, file_len, true, r->errp);
    if (file_len < 0) {
        error_setg_errno(r->errp, -file_len, "qcow2: could not get the "
                         "length of '%s'", r->bs->filename);
    }
}

static bool qcow2_reopen_prepare(BlockDriverState *bs, bool read_only,
                                 Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Reopen r = { .bs = bs, .errp = errp };

    if (read_only) {
        co_run_sync(qcow2_reopen_ro_entry, &r);
        return r.ret == 0;
    }
    if (s->corrupt || (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        error_setg(errp, "qcow2: Image is corrupt; cannot be opened "
                   "read/write");
        return false;
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        error_setg(errp, "qcow2: '%s' is dirty (lazy refcounts) and cannot "
                   "be switched to read/write; open it read/write to "
                   "repair it", bs->filename);
        return false;
    }
    co_run_sync(qcow2_reopen_rw_entry, &r);
    return r.ret == 0;
}

static void qcow2_reopen_commit(BlockDriverState *bs)
{
    if (bs->read_only) {
        qcow2_bitmaps_set_readonly(bs, true);
    }
}

static void coroutine_fn qcow2_reopen_mark_entry(void *opaque)
{
    Qcow2Reopen *r = opaque;

    r->ret = qcow2_bitmaps_mark_in_use(r->bs, r->errp);
}

/* Flag the bitmaps in_use: the node is read/write (again). */
static void qcow2_reopen_mark_in_use(BlockDriverState *bs)
{
    Error *local_err = NULL;
    Qcow2Reopen r = { .bs = bs, .errp = &local_err };

    co_run_sync(qcow2_reopen_mark_entry, &r);
    if (local_err) {
        /* They stay valid in memory and are stored at close. */
        error_report_err(local_err);
    }
}

static void qcow2_reopen_abort(BlockDriverState *bs)
{
    if (!bs->read_only) {
        qcow2_reopen_mark_in_use(bs);
    }
}

static void qcow2_reopen_commit_post(BlockDriverState *bs)
{
    if (!bs->read_only) {
        qcow2_reopen_mark_in_use(bs);
        qcow2_bitmaps_set_readonly(bs, false);
    }
}

static const BlockDriver bdrv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .can_reopen_read_only = true,
    .bdrv_reopen_prepare = qcow2_reopen_prepare,
    .bdrv_reopen_commit = qcow2_reopen_commit,
    .bdrv_reopen_abort = qcow2_reopen_abort,
    .bdrv_reopen_commit_post = qcow2_reopen_commit_post,
    .bdrv_open = qcow2_open,
    .bdrv_close = qcow2_close,
    .bdrv_co_create = qcow2_co_create,
    .bdrv_co_preadv = qcow2_co_preadv,
    .bdrv_co_pwritev = qcow2_co_pwritev,
    .bdrv_co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
    .bdrv_co_pdiscard = qcow2_co_pdiscard,
    .bdrv_co_flush = qcow2_co_flush,
    .bdrv_co_block_status = qcow2_co_block_status,
    .bdrv_get_allocated_file_size = qcow2_get_allocated_file_size,
    .bdrv_get_info = qcow2_get_info,
    .bdrv_can_store_new_dirty_bitmap = qcow2_can_store_new_dirty_bitmap,
    .bdrv_co_remove_persistent_dirty_bitmap =
        qcow2_co_remove_persistent_dirty_bitmap,
    .bdrv_co_make_dirty_bitmap_crash_safe =
        qcow2_co_make_dirty_bitmap_crash_safe,
    .bdrv_co_before_dirty_write = qcow2_co_before_dirty_write,
    .bdrv_co_cover_dirty_bitmap = qcow2_co_cover_dirty_bitmap,
    .bdrv_get_specific_info = qcow2_get_specific_info,
    .bdrv_probe = qcow2_probe,
    .bdrv_child_perm = qcow2_child_perm,
    .supported_write_flags = BDRV_REQ_WRITE_COMPRESSED,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) qcow2_register(void)
{
    bdrv_register(&bdrv_qcow2);
}
