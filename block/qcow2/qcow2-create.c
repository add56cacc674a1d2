/*
 * blockdev-create for qcow2: write a new, empty image onto an existing
 * node.
 *
 * The options are checked first, in the order and with the messages of
 * QEMU 7.2, so that a client sees the same job error from both daemons;
 * the features blockd cannot create (encryption, external data files,
 * extended L2 entries) are refused afterwards with blockd's own
 * "qcow2: ..." messages.
 *
 * The whole layout is planned before anything is written, so the image
 * needs no allocator and no open driver instance:
 *
 *     cluster 0        header, header extensions, backing file name
 *     reftable         refcount table (at least one cluster)
 *     refblocks        refcount blocks covering every cluster below
 *     L1               the active L1 table, sized for @size
 *     L2 tables        with preallocation only: one per L1 entry
 *     data             with preallocation only: one cluster per guest
 *                      cluster, mapped in order (COPIED, refcount 1)
 *
 * The number of refcount blocks depends on the number of clusters,
 * which includes the refcount blocks and the table themselves, so it is
 * found by iterating to a fixed point (two or three rounds).  Every
 * cluster of the layout has refcount 1 and nothing else does, so
 * "qemu-img check" finds neither leaks nor errors.  Unlike QEMU, which
 * opens the half-written image and lets its allocator place the L1 and
 * L2 tables, the order above is fixed; the format does not care.
 *
 * Version 3 headers are 112 bytes long (including the compression type
 * byte) and carry the feature name table; version 2 headers are 72 bytes
 * long and have neither.  The backing format extension, when given,
 * precedes the feature name table, and the backing file name follows the
 * end-of-extensions marker, as QEMU writes them; like QEMU, the feature
 * name table is left out when it would not fit in the header cluster
 * together with the backing file name.  Everything is written
 * through a temporary child of the target node (taking write and resize),
 * which the file driver lets grow past its end; the node is flushed last.
 * Metadata preallocation extends the file over the data clusters without
 * writing them (a sparse file reads zeroes), falloc also reserves them
 * with write-zeroes, full writes them.
 */
#include "block/block-backend.h"
#include "block/qcow2/qcow2.h"
#include "qapi/qapi-types.h"

/* QEMU's maximum length of a node (the largest 1 GiB multiple). */
#define QCOW2_CREATE_MAX_LENGTH     0x7fffffffc0000000LL

enum {
    QCOW2_DEFAULT_CLUSTER_SIZE = 65536,
    QCOW2_V3_HEADER_SIZE = 112,         /* with compression type, padded */
    QCOW2_HDR_COMPRESSION_TYPE = 104,
    QCOW2_FEATURE_NAME_LEN = 46,
    QCOW2_EXTL2_MIN_CLUSTER_SIZE = 16384,
    QCOW2_CREATE_CHUNK = 1024 * 1024,
};

/* The feature name table of a version 3 header: (type, bit, name). */
static const struct {
    uint8_t type;
    uint8_t bit;
    const char *name;
} qcow2_feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

/* The checked options and the planned layout (offsets in clusters). */
typedef struct Qcow2CreatePlan {
    BlockdevCreateOptionsQcow2 *opts;
    int version;
    int cluster_bits;
    int64_t cluster_size;
    int refcount_order;
    PreallocMode prealloc;
    uint64_t size;
    uint32_t l1_size;
    bool feature_table;         /* v3, if it fits with the backing name */

    int64_t reftable_start, reftable_clusters;
    int64_t refblock_start, refblocks;
    int64_t l1_start, l1_clusters;
    int64_t l2_start, l2_tables;
    int64_t data_start, data_clusters;
    int64_t total_clusters;
} Qcow2CreatePlan;

static void put_be32(uint8_t *buf, size_t offset, uint32_t value)
{
    value = GUINT32_TO_BE(value);
    memcpy(buf + offset, &value, 4);
}

static void put_be64(uint8_t *buf, size_t offset, uint64_t value)
{
    value = GUINT64_TO_BE(value);
    memcpy(buf + offset, &value, 8);
}

/* The argument checks of QEMU 7.2, in its order and with its messages. */
static bool qcow2_create_check(Qcow2CreatePlan *p, Error **errp)
{
    BlockdevCreateOptionsQcow2 *o = p->opts;
    bool extended_l2 = o->has_extended_l2 && o->extended_l2;
    int64_t bits = o->has_refcount_bits ? o->refcount_bits : 16;
    uint64_t cs = o->has_cluster_size ? o->cluster_size
                                      : QCOW2_DEFAULT_CLUSTER_SIZE;

    if (o->size % 512) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return false;
    }
    p->version = o->has_version && o->version == BLOCKDEV_QCOW2_VERSION_V2
                 ? 2 : 3;
    if (extended_l2 && p->version < 3) {
        error_setg(errp, "Extended L2 entries are only supported with "
                   "compatibility level 1.1 and above (use version=v3 or "
                   "greater)");
        return false;
    }
    if (cs < (1U << QCOW2_MIN_CLUSTER_BITS) ||
        cs > (1U << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
        error_setg(errp, "Cluster size must be a power of two between %d "
                   "and %dk", 1 << QCOW2_MIN_CLUSTER_BITS,
                   1 << (QCOW2_MAX_CLUSTER_BITS - 10));
        return false;
    }
    if (extended_l2 && cs < QCOW2_EXTL2_MIN_CLUSTER_SIZE) {
        error_setg(errp, "Extended L2 entries are only supported with "
                   "cluster sizes of at least %d bytes",
                   QCOW2_EXTL2_MIN_CLUSTER_SIZE);
        return false;
    }
    p->cluster_size = cs;
    p->cluster_bits = __builtin_ctzll(cs);
    p->prealloc = o->has_preallocation ? o->preallocation
                                       : PREALLOC_MODE_OFF;
    if (o->backing_file && p->prealloc != PREALLOC_MODE_OFF &&
        !extended_l2) {
        error_setg(errp, "Backing file and preallocation can only be used "
                   "at the same time if extended_l2 is on");
        return false;
    }
    if (o->has_backing_fmt && !o->backing_file) {
        error_setg(errp, "Backing format cannot be used without backing "
                   "file");
        return false;
    }
    if (o->has_lazy_refcounts && o->lazy_refcounts && p->version < 3) {
        error_setg(errp, "Lazy refcounts only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return false;
    }
    if (bits <= 0 || bits > 64 || (bits & (bits - 1))) {
        error_setg(errp, "Refcount width must be a power of two and may not "
                   "exceed 64 bits");
        return false;
    }
    if (p->version < 3 && bits != 16) {
        error_setg(errp, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use version=v3 or "
                   "greater)");
        return false;
    }
    p->refcount_order = __builtin_ctzll(bits);
    if (o->has_data_file_raw && o->data_file_raw) {
        if (!o->data_file) {
            error_setg(errp, "data-file-raw requires data-file");
            return false;
        }
        if (o->backing_file) {
            error_setg(errp, "Backing file and data-file-raw cannot be used "
                       "at the same time");
            return false;
        }
    }
    if (o->has_compression_type &&
        o->compression_type != QCOW2_COMPRESSION_TYPE_ZLIB &&
        p->version < 3) {
        error_setg(errp, "Non-zlib compression type is only supported with "
                   "compatibility level 1.1 and above (use version=v3 or "
                   "greater)");
        return false;
    }

    /* What QEMU can create and blockd cannot. */
    if (o->data_file) {
        error_setg(errp, "qcow2: external data files (data-file) are not "
                   "supported");
        return false;
    }
    if (o->encrypt) {
        error_setg(errp, "qcow2: encrypted images (encrypt) are not "
                   "supported");
        return false;
    }
    if (extended_l2) {
        error_setg(errp, "qcow2: extended L2 entries (extended-l2) are not "
                   "supported");
        return false;
    }
    return true;
}

/*
 * Bytes of the header cluster before the backing file name, with or
 * without the feature name table.
 */
static size_t qcow2_create_header_len(const Qcow2CreatePlan *p,
                                      bool feature_table)
{
    const BlockdevCreateOptionsQcow2 *o = p->opts;
    size_t len = p->version >= 3 ? QCOW2_V3_HEADER_SIZE
                                 : QCOW2_V2_HEADER_LEN;

    if (o->has_backing_fmt) {
        len += 8 + ALIGN_UP(strlen(BlockdevDriver_str(o->backing_fmt)), 8);
    }
    if (feature_table) {
        len += 8 + G_N_ELEMENTS(qcow2_feature_names) * 48;
    }
    return len + 8;                     /* end of extensions */
}

/* The size limits QEMU finds while resizing the new image. */
static bool qcow2_create_plan(Qcow2CreatePlan *p, Error **errp)
{
    const BlockdevCreateOptionsQcow2 *o = p->opts;
    int64_t cs = p->cluster_size;
    int64_t l2_entries = cs / 8;
    int64_t rb_entries = cs * 8 >> p->refcount_order;
    uint64_t l1_size;
    int64_t fixed;

    p->size = o->size;
    if (p->size > QCOW2_CREATE_MAX_LENGTH) {
        error_setg(errp, "Could not resize image: offset(%" PRIu64 ") "
                   "exceeds maximum(%" PRId64 ")", p->size,
                   (int64_t)QCOW2_CREATE_MAX_LENGTH);
        return false;
    }
    l1_size = DIV_ROUND_UP(p->size, (uint64_t)cs * l2_entries);
    if (l1_size > QCOW2_MAX_L1_BYTES / 8) {
        error_setg(errp, "Could not resize image: Failed to grow the L1 "
                   "table: File too large");
        return false;
    }
    p->l1_size = l1_size;
    p->feature_table = p->version >= 3 &&
                       qcow2_create_header_len(p, true) +
                       (o->backing_file ? strlen(o->backing_file) : 0) <=
                       (size_t)cs;
    if (o->backing_file) {
        size_t name_len = strlen(o->backing_file);
        int err = 0;

        if (name_len > QCOW2_MAX_BACKING_NAME) {
            err = EINVAL;
        } else if (qcow2_create_header_len(p, false) + name_len >
                   (size_t)cs) {
            err = ENOSPC;
        }
        if (err) {
            error_setg(errp, "Could not assign backing file '%s' with format "
                       "'%s': %s", o->backing_file,
                       o->has_backing_fmt ? BlockdevDriver_str(o->backing_fmt)
                                          : "(null)", g_strerror(err));
            return false;
        }
    }

    p->l1_clusters = DIV_ROUND_UP((int64_t)p->l1_size * 8, cs);
    if (p->prealloc != PREALLOC_MODE_OFF) {
        p->l2_tables = p->l1_size;
        p->data_clusters = DIV_ROUND_UP(p->size, cs);
    }
    fixed = 1 + p->l1_clusters + p->l2_tables + p->data_clusters;
    p->reftable_clusters = 1;
    p->refblocks = 0;
    for (;;) {
        int64_t total = fixed + p->reftable_clusters + p->refblocks;
        int64_t rbs = DIV_ROUND_UP(total, rb_entries);
        int64_t rtc = MAX(DIV_ROUND_UP(rbs * 8, cs), 1);

        if (rbs == p->refblocks && rtc == p->reftable_clusters) {
            p->total_clusters = total;
            break;
        }
        p->refblocks = rbs;
        p->reftable_clusters = rtc;
    }
    if (p->reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES ||
        p->total_clusters > (int64_t)(QCOW2_MAX_HOST_OFFSET / cs)) {
        error_setg(errp, "qcow2: the image would need a refcount table "
                   "larger than %d bytes; use larger clusters or less "
                   "preallocation", QCOW2_MAX_REFTABLE_BYTES);
        return false;
    }
    p->reftable_start = 1;
    p->refblock_start = p->reftable_start + p->reftable_clusters;
    p->l1_start = p->refblock_start + p->refblocks;
    p->l2_start = p->l1_start + p->l1_clusters;
    p->data_start = p->l2_start + p->l2_tables;
    return true;
}

/* Cluster 0: the header, its extensions and the backing file name. */
static void qcow2_create_fill_header(const Qcow2CreatePlan *p, uint8_t *buf)
{
    const BlockdevCreateOptionsQcow2 *o = p->opts;
    bool zstd = o->has_compression_type &&
                o->compression_type == QCOW2_COMPRESSION_TYPE_ZSTD;
    size_t pos;

    put_be32(buf, 0, QCOW2_MAGIC);
    put_be32(buf, 4, p->version);
    put_be32(buf, 20, p->cluster_bits);
    put_be64(buf, 24, p->size);
    put_be32(buf, 36, p->l1_size);
    put_be64(buf, 40, p->l1_size ? p->l1_start << p->cluster_bits : 0);
    put_be64(buf, QCOW2_HDR_REFTABLE_OFFSET,
             p->reftable_start << p->cluster_bits);
    put_be32(buf, QCOW2_HDR_REFTABLE_OFFSET + 8, p->reftable_clusters);
    if (p->version >= 3) {
        put_be64(buf, QCOW2_HDR_INCOMPAT,
                 zstd ? QCOW2_INCOMPAT_COMPRESSION : 0);
        put_be64(buf, QCOW2_HDR_INCOMPAT + 8,
                 o->has_lazy_refcounts && o->lazy_refcounts
                 ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        put_be32(buf, 96, p->refcount_order);
        put_be32(buf, 100, QCOW2_V3_HEADER_SIZE);
        buf[QCOW2_HDR_COMPRESSION_TYPE] = zstd ? 1 : 0;
        pos = QCOW2_V3_HEADER_SIZE;
    } else {
        pos = QCOW2_V2_HEADER_LEN;
    }

    if (o->has_backing_fmt) {
        const char *fmt = BlockdevDriver_str(o->backing_fmt);

        put_be32(buf, pos, QCOW2_EXT_BACKING_FORMAT);
        put_be32(buf, pos + 4, strlen(fmt));
        memcpy(buf + pos + 8, fmt, strlen(fmt));
        pos += 8 + ALIGN_UP(strlen(fmt), 8);
    }
    if (p->feature_table) {
        put_be32(buf, pos, QCOW2_EXT_FEATURE_TABLE);
        put_be32(buf, pos + 4, G_N_ELEMENTS(qcow2_feature_names) * 48);
        pos += 8;
        for (size_t i = 0; i < G_N_ELEMENTS(qcow2_feature_names); i++) {
            buf[pos] = qcow2_feature_names[i].type;
            buf[pos + 1] = qcow2_feature_names[i].bit;
            memcpy(buf + pos + 2, qcow2_feature_names[i].name,
                   MIN(strlen(qcow2_feature_names[i].name),
                       (size_t)QCOW2_FEATURE_NAME_LEN));
            pos += 48;
        }
    }
    pos += 8;                           /* end of extensions: zeroes */
    if (o->backing_file) {
        put_be64(buf, 8, pos);
        put_be32(buf, 16, strlen(o->backing_file));
        memcpy(buf + pos, o->backing_file, strlen(o->backing_file));
    }
}

/* Write @nb clusters produced one by one by @fill from cluster @start. */
typedef void Qcow2CreateFill(const Qcow2CreatePlan *p, int64_t index,
                             uint8_t *cluster);

static int coroutine_fn qcow2_create_write(BdrvChild *child,
                                           const Qcow2CreatePlan *p,
                                           int64_t start, int64_t nb,
                                           Qcow2CreateFill *fill,
                                           const char *what, Error **errp)
{
    g_autofree uint8_t *buf = g_malloc(p->cluster_size);
    int ret;

    for (int64_t i = 0; i < nb; i++) {
        memset(buf, 0, p->cluster_size);
        fill(p, i, buf);
        ret = bdrv_co_pwrite(child, (start + i) << p->cluster_bits,
                             p->cluster_size, buf, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write qcow2 %s", what);
            return ret;
        }
    }
    return 0;
}

static void fill_header(const Qcow2CreatePlan *p, int64_t index,
                        uint8_t *cluster)
{
    qcow2_create_fill_header(p, cluster);
}

static void fill_reftable(const Qcow2CreatePlan *p, int64_t index,
                          uint8_t *cluster)
{
    int64_t per_cluster = p->cluster_size / 8;

    for (int64_t i = 0; i < per_cluster; i++) {
        int64_t rb = index * per_cluster + i;

        if (rb < p->refblocks) {
            put_be64(cluster, i * 8, (p->refblock_start + rb)
                                     << p->cluster_bits);
        }
    }
}

static void fill_refblock(const Qcow2CreatePlan *p, int64_t index,
                          uint8_t *cluster)
{
    int64_t entries = p->cluster_size * 8 >> p->refcount_order;
    int64_t first = index * entries;

    for (int64_t i = 0; i < entries && first + i < p->total_clusters; i++) {
        qcow2_refcount_set(cluster, p->refcount_order, i, 1);
    }
}

static void fill_l1(const Qcow2CreatePlan *p, int64_t index,
                    uint8_t *cluster)
{
    int64_t per_cluster = p->cluster_size / 8;

    for (int64_t i = 0; i < per_cluster && p->l2_tables; i++) {
        int64_t l1i = index * per_cluster + i;

        if (l1i < p->l2_tables) {
            put_be64(cluster, i * 8, QCOW2_OFLAG_COPIED |
                     ((p->l2_start + l1i) << p->cluster_bits));
        }
    }
}

static void fill_l2(const Qcow2CreatePlan *p, int64_t index,
                    uint8_t *cluster)
{
    int64_t per_cluster = p->cluster_size / 8;

    for (int64_t i = 0; i < per_cluster; i++) {
        int64_t g = index * per_cluster + i;

        if (g < p->data_clusters) {
            put_be64(cluster, i * 8, QCOW2_OFLAG_COPIED |
                     ((p->data_start + g) << p->cluster_bits));
        }
    }
}

/* The data clusters of a preallocated image, as the mode asks. */
static int coroutine_fn qcow2_create_data(BdrvChild *child,
                                          const Qcow2CreatePlan *p,
                                          Error **errp)
{
    int64_t start = p->data_start << p->cluster_bits;
    int64_t end = (p->data_start + p->data_clusters) << p->cluster_bits;
    g_autofree uint8_t *zeroes = NULL;
    int ret = 0;

    if (!p->data_clusters) {
        return 0;
    }
    if (p->prealloc == PREALLOC_MODE_FULL) {
        zeroes = g_malloc0(QCOW2_CREATE_CHUNK);
        for (int64_t off = start; off < end && ret >= 0;
             off += QCOW2_CREATE_CHUNK) {
            ret = bdrv_co_pwrite(child, off,
                                 MIN(QCOW2_CREATE_CHUNK, end - off),
                                 zeroes, 0);
        }
    } else {
        /* Extend the file over the data clusters; they read zeroes. */
        zeroes = g_malloc0(512);
        ret = bdrv_co_pwrite(child, end - 512, 512, zeroes, 0);
        if (ret >= 0 && p->prealloc == PREALLOC_MODE_FALLOC) {
            ret = bdrv_co_pwrite_zeroes(child, start, end - start, 0);
        }
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not preallocate data clusters");
        return ret;
    }
    return 0;
}

static int coroutine_fn qcow2_create_image(BdrvChild *child,
                                           const Qcow2CreatePlan *p,
                                           Error **errp)
{
    int ret;

    ret = qcow2_create_write(child, p, 0, 1, fill_header, "header", errp);
    if (ret == 0) {
        ret = qcow2_create_write(child, p, p->reftable_start,
                                 p->reftable_clusters, fill_reftable,
                                 "refcount table", errp);
    }
    if (ret == 0) {
        ret = qcow2_create_write(child, p, p->refblock_start, p->refblocks,
                                 fill_refblock, "refcount block", errp);
    }
    if (ret == 0 && p->l2_tables) {
        ret = qcow2_create_write(child, p, p->l1_start, p->l1_clusters,
                                 fill_l1, "L1 table", errp);
    } else if (ret == 0 && p->l1_size) {
        /* An empty L1 table: only its own bytes, as QEMU writes it. */
        int64_t bytes = (int64_t)p->l1_size * 8;
        g_autofree uint8_t *zeroes = g_malloc0(MIN(bytes,
                                                   QCOW2_CREATE_CHUNK));

        for (int64_t off = 0; off < bytes && ret >= 0;
             off += QCOW2_CREATE_CHUNK) {
            ret = bdrv_co_pwrite(child, (p->l1_start << p->cluster_bits) +
                                 off, MIN(QCOW2_CREATE_CHUNK, bytes - off),
                                 zeroes, 0);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write qcow2 L1 table");
        }
    }
    if (ret == 0) {
        ret = qcow2_create_write(child, p, p->l2_start, p->l2_tables,
                                 fill_l2, "L2 table", errp);
    }
    if (ret == 0) {
        ret = qcow2_create_data(child, p, errp);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(child->bs);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not flush the new image");
        }
    }
    return ret < 0 ? ret : 0;
}

static char *qcow2_create_get_parent_desc(BdrvChild *child)
{
    return g_strdup(BLK_ANONYMOUS_USER);
}

static const BdrvChildClass qcow2_create_child_class = {
    .get_parent_desc = qcow2_create_get_parent_desc,
};

int coroutine_fn qcow2_co_create(BlockdevCreateOptions *options,
                                 Error **errp)
{
    Qcow2CreatePlan plan = { .opts = &options->u.qcow2 };
    BlockdevRef *ref = plan.opts->file;
    BlockDriverState *bs;
    BdrvChild *child;
    int ret = -EINVAL;

    g_assert(options->driver == BLOCKDEV_DRIVER_QCOW2);
    if (ref->type == QTYPE_QSTRING) {
        bs = bdrv_lookup_bs(ref->u.reference, ref->u.reference, errp);
        if (!bs) {
            return -EIO;
        }
        bdrv_ref(bs);
    } else {
        bs = bdrv_open_blockdev(&ref->u.definition, false, errp);
        if (!bs) {
            return -EIO;
        }
    }
    if (!qcow2_create_check(&plan, errp) ||
        !qcow2_create_plan(&plan, errp)) {
        goto out;
    }
    child = bdrv_attach_child(bs, "file", BDRV_CHILD_DATA |
                              BDRV_CHILD_METADATA,
                              &qcow2_create_child_class, NULL, NULL,
                              BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE |
                              BLK_PERM_RESIZE, BLK_PERM_ALL, errp);
    if (!child) {
        ret = -EPERM;
        goto out;
    }
    ret = qcow2_create_image(child, &plan, errp);
    bdrv_detach_child(child);

out:
    bdrv_unref(bs);
    return ret;
}
