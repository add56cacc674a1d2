/*
 * The qcow2 format driver: the one private header of block/qcow2*.c.
 *
 * See docs/devel/qcow2.rst for the design: the on-disk structures, the
 * metadata caches, cluster allocation and the order of metadata writes
 * that keeps the image consistent (at worst leaking clusters) whenever
 * the process dies.
 *
 * Locking: every metadata structure below (L1 table, refcount table,
 * both caches, the allocation and in-flight lists) is protected by
 * BDRVQcow2State.lock, a CoMutex.  Guest data I/O runs without it: a
 * request looks up (or allocates) its host clusters under the lock,
 * registers them, drops the lock for the data transfer, and takes it
 * again only to link newly allocated clusters into the L2 table.
 */
#ifndef BLOCK_QCOW2_H
#define BLOCK_QCOW2_H

#include "block/block_int.h"

#define QCOW2_MAGIC 0x514649fbU             /* "QFI\xfb" */

enum {
    QCOW2_V2_HEADER_LEN = 72,
    QCOW2_V3_HEADER_LEN = 104,
    QCOW2_MIN_CLUSTER_BITS = 9,
    QCOW2_MAX_CLUSTER_BITS = 21,
    QCOW2_MAX_BACKING_NAME = 1023,
    QCOW2_MAX_SNAPSHOTS = 65536,
};

/* Pending deferred frees that force a release (see qcow2_free_l2e()). */
#define QCOW2_DEFERRED_FREE_MAX_BYTES (16 * 1024 * 1024)

/* Implementation limits, the same as QEMU's, in bytes. */
#define QCOW2_MAX_L1_BYTES          (32 * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES    (8 * 1024 * 1024)

/* Incompatible, compatible and autoclear feature bits. */
#define QCOW2_INCOMPAT_DIRTY        (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ULL << 4)
#define QCOW2_INCOMPAT_SUPPORTED    (QCOW2_INCOMPAT_DIRTY | \
                                     QCOW2_INCOMPAT_CORRUPT | \
                                     QCOW2_INCOMPAT_COMPRESSION)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_BITMAPS     (1ULL << 0)

/* Header extension types. */
#define QCOW2_EXT_END               0x00000000U
#define QCOW2_EXT_BACKING_FORMAT    0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE     0x6803f857U
#define QCOW2_EXT_BITMAPS           0x23852875U
#define QCOW2_EXT_CRYPTO            0x0537be77U
#define QCOW2_EXT_DATA_FILE         0x44415441U
/* blockd's own: the names of the crash-safe bitmaps ("blkc"). */
#define QCOW2_EXT_BLOCKD_CRASH_SAFE 0x626c6b63U

/* Header field offsets rewritten in place. */
enum {
    QCOW2_HDR_REFTABLE_OFFSET = 48,     /* u64, then u32 clusters */
    QCOW2_HDR_INCOMPAT = 72,
    QCOW2_HDR_AUTOCLEAR = 88,
};

/* L1, L2 and refcount table entries. */
#define QCOW2_OFLAG_COPIED          (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED      (1ULL << 62)
#define QCOW2_OFLAG_ZERO            (1ULL << 0)
#define QCOW2_L1E_OFFSET_MASK       0x00fffffffffffe00ULL
#define QCOW2_L2E_OFFSET_MASK       0x00fffffffffffe00ULL
#define QCOW2_REFT_OFFSET_MASK      0xfffffffffffffe00ULL
/* Host clusters must lie below 2^56 (the L2 entry offset field). */
#define QCOW2_MAX_HOST_OFFSET       (1ULL << 56)

typedef enum Qcow2ClusterType {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,       /* zero flag, no host cluster */
    QCOW2_CLUSTER_ZERO_ALLOC,       /* zero flag, preallocated host cluster */
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
} Qcow2ClusterType;

typedef struct Qcow2Cache Qcow2Cache;
typedef struct Qcow2Bitmaps Qcow2Bitmaps;    /* qcow2-bitmap.c */
typedef struct Qcow2CrashSafe Qcow2CrashSafe;  /* qcow2-bitmap-crash-safe.c */

/*
 * The kinds of metadata the overlap check protects, as bits of a mask
 * (see qcow2-overlap.c).  A writer names the kind it rewrites in place,
 * if any; QCOW2_MD_NONE for guest data and for metadata written into
 * newly allocated clusters.
 */
typedef enum Qcow2Metadata {
    QCOW2_MD_NONE = 0,
    QCOW2_MD_HEADER = 1 << 0,
    QCOW2_MD_ACTIVE_L1 = 1 << 1,
    QCOW2_MD_ACTIVE_L2 = 1 << 2,
    QCOW2_MD_REFCOUNT_TABLE = 1 << 3,
    QCOW2_MD_REFCOUNT_BLOCK = 1 << 4,
    QCOW2_MD_SNAPSHOT_TABLE = 1 << 5,
    QCOW2_MD_INACTIVE_L1 = 1 << 6,
    QCOW2_MD_INACTIVE_L2 = 1 << 7,
    QCOW2_MD_BITMAP_DIRECTORY = 1 << 8,
    QCOW2_MD_BITMAP_TABLE = 1 << 9,
    QCOW2_MD_ALL = (1 << 10) - 1,
} Qcow2Metadata;

/* The location of an internal snapshot's L1 table (an inactive one). */
typedef struct Qcow2SnapshotL1 {
    int64_t offset;
    uint32_t size;                  /* entries */
} Qcow2SnapshotL1;

/* A run of guest clusters being allocated (see qcow2-cluster.c). */
typedef struct Qcow2Alloc {
    int64_t guest_start;            /* bytes, cluster aligned */
    int64_t guest_end;
    CoQueue waiters;                /* overlapping requests */
    GList link;
} Qcow2Alloc;

/* Host bytes under data I/O without the lock: never reallocated. */
typedef struct Qcow2InflightIO {
    int64_t host_start;
    int64_t host_end;
    GList link;
} Qcow2InflightIO;

typedef struct BDRVQcow2State {
    /* Set at open and never changed. */
    int version;
    int cluster_bits;
    int64_t cluster_size;
    int l2_bits;                    /* log2(entries per L2 table) */
    int64_t l2_entries;
    int refcount_order;
    int64_t refcount_block_entries; /* refcounts per refcount block */
    int refcount_block_bits;        /* log2(refcount_block_entries) */
    uint64_t refcount_max;
    uint32_t header_length;
    uint64_t compatible_features;
    uint32_t nb_snapshots;
    int64_t snapshots_offset;
    int compression_type;           /* 0 zlib (deflate), 1 zstd */
    bool pass_discard_request;
    bool pass_discard_other;
    unsigned overlap_checks;        /* Qcow2Metadata mask checked */
    int64_t snapshots_size;         /* bytes of the snapshot table */
    Qcow2SnapshotL1 *snapshot_l1;   /* nb_snapshots of them */
    /*
     * The L2 tables the snapshots' L1 tables name, cluster aligned,
     * sorted and distinct; read only for read/write opens (when metadata
     * can be written), else NULL.  No snapshot operations exist, so they
     * do not change while the image is open.
     */
    int64_t *inactive_l2;
    size_t nb_inactive_l2;

    /* Protected by lock. */
    CoMutex lock;
    uint64_t incompatible_features;
    uint64_t autoclear_features;    /* all but bitmaps cleared on write */
    uint64_t *l1_table;             /* host byte order */
    uint32_t l1_size;
    int64_t l1_table_offset;
    uint64_t *refcount_table;       /* host byte order */
    uint32_t refcount_table_size;   /* entries */
    /*
     * Entries up to the last nonzero one (all later ones are 0), so the
     * overlap check scans only those; whoever changes refcount_table
     * calls qcow2_refcount_table_changed().
     */
    uint32_t refcount_table_used;
    int64_t refcount_table_offset;
    Qcow2Cache *l2_cache;
    Qcow2Cache *refcount_cache;
    int64_t free_cluster_index;     /* no free cluster below this one */
    /*
     * Where the next compressed cluster goes (qcow2_alloc_bytes()): the
     * first unused byte of a host cluster that compressed data already
     * uses, or 0 for none.  Reset when that cluster is freed.
     */
    int64_t free_byte_offset;
    GArray *deferred_frees;         /* Qcow2DeferredFree, see refcount.c */
    int64_t deferred_free_bytes;    /* whole clusters in deferred_frees */
    GQueue allocs;                  /* Qcow2Alloc */
    GQueue inflight;                /* Qcow2InflightIO */
    bool corrupt;                   /* marked corrupt while open */
    Qcow2Bitmaps *bitmaps;          /* the bitmap directory */
    Qcow2CrashSafe *crash_safe;     /* crash-safe bitmaps; NULL: none */
} BDRVQcow2State;

/* Big-endian fields of on-disk structures. */
static inline void qcow2_put_be16(uint8_t *p, uint16_t v)
{
    v = GUINT16_TO_BE(v);
    memcpy(p, &v, 2);
}

static inline void qcow2_put_be32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static inline void qcow2_put_be64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

static inline uint16_t qcow2_get_be16(const uint8_t *p)
{
    uint16_t v;

    memcpy(&v, p, 2);
    return GUINT16_FROM_BE(v);
}

static inline uint32_t qcow2_get_be32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static inline uint64_t qcow2_get_be64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static inline int64_t qcow2_offset_into_cluster(BDRVQcow2State *s,
                                                int64_t offset)
{
    return offset & (s->cluster_size - 1);
}

static inline int64_t qcow2_start_of_cluster(BDRVQcow2State *s,
                                             int64_t offset)
{
    return offset & ~(s->cluster_size - 1);
}

static inline int64_t qcow2_size_to_clusters(BDRVQcow2State *s,
                                             int64_t size)
{
    return (size + s->cluster_size - 1) >> s->cluster_bits;
}

/*
 * qcow2_l2e_type:
 * @l2e: an L2 entry in host byte order
 * @version: 2 or 3 (version 2 has no zero flag)
 *
 * Decode the kind of cluster an L2 entry describes.
 */
static inline Qcow2ClusterType qcow2_l2e_type(uint64_t l2e, int version)
{
    if (l2e & QCOW2_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if (version >= 3 && (l2e & QCOW2_OFLAG_ZERO)) {
        return (l2e & QCOW2_L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                             : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    return (l2e & QCOW2_L2E_OFFSET_MASK) ? QCOW2_CLUSTER_NORMAL
                                         : QCOW2_CLUSTER_UNALLOCATED;
}

/*
 * qcow2_compressed_range:
 * @l2e: a compressed cluster descriptor
 * @cluster_bits: log2 of the cluster size
 * @host: set to the host offset of the compressed data
 * @bytes: set to the bytes the descriptor reserves (whole 512-byte
 *     sectors, counted from the sector holding @host)
 */
static inline void qcow2_compressed_range(uint64_t l2e, int cluster_bits,
                                          int64_t *host, int64_t *bytes)
{
    int x = 62 - (cluster_bits - 8);
    uint64_t sectors_mask = (1ULL << (cluster_bits - 8)) - 1;

    *host = l2e & ((1ULL << x) - 1);
    *bytes = (int64_t)(((l2e >> x) & sectors_mask) + 1) * 512 -
             (*host & 511);
}

/*
 * qcow2_compressed_l2e:
 * The descriptor of @bytes of compressed data at host offset @host (for
 * which qcow2_compressed_range() reports the same @host and @bytes
 * rounded up to the end of their last sector), or 0 if @host is too
 * large for the descriptor's offset field.
 */
static inline uint64_t qcow2_compressed_l2e(int64_t host, int64_t bytes,
                                            int cluster_bits)
{
    int x = 62 - (cluster_bits - 8);
    uint64_t extra_sectors = (host + bytes - 1) / 512 - host / 512;

    if (host >= (1LL << x)) {
        return 0;
    }
    return QCOW2_OFLAG_COMPRESSED | extra_sectors << x | (uint64_t)host;
}

/* qcow2.c */

/*
 * qcow2_signal_corruption:
 * Report metadata corruption found at run time, mark the image corrupt in
 * its header (so that it is not opened read/write again before a repair)
 * and fail every later write of this node; the first time, also send
 * BLOCK_IMAGE_CORRUPTED with the message and the affected host range
 * (@offset and @size, -1 when unknown).  Returns -EIO.
 */
int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs,
                                         int64_t offset, int64_t size,
                                         const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* Write an 8-byte header field in place (overlap-checked, no flush). */
int coroutine_fn qcow2_write_header_u64(BlockDriverState *bs, int offset,
                                        uint64_t value);

/* qcow2-overlap.c */

/* The overlap checks of an overlap-check mode (QCOW2_MD_* mask). */
unsigned qcow2_overlap_checks_for_mode(int mode);

/* QEMU's name of one kind of metadata, as in its messages. */
const char *qcow2_metadata_name(Qcow2Metadata kind);

/*
 * qcow2_metadata_overlap:
 * The first kind in @checks (a QCOW2_MD_* mask) of metadata in use that
 * shares a cluster with [@offset, @offset + @bytes), or QCOW2_MD_NONE.
 * Reads only in-memory state: a linear scan of the L1 table, the
 * refcount table, the snapshots and the bitmap directory, and a binary
 * search of the inactive L2 tables.  Called with s->lock held (or
 * during open).
 */
Qcow2Metadata qcow2_metadata_overlap(BDRVQcow2State *s, unsigned checks,
                                     int64_t offset, int64_t bytes);

/*
 * qcow2_check_metadata_overlap:
 * Fail before a write of [@offset, @offset + @bytes) to the image file
 * that would hit metadata in use other than @in_place (the kind the
 * caller legitimately rewrites in place; QCOW2_MD_NONE for guest data
 * and for new clusters): the image is marked corrupt ("Preventing
 * invalid write on metadata (overlaps with <kind>)") and -EIO returned.
 * Also -EIO once the image is corrupt, so nothing more is written.
 * Called with s->lock held (or during open).
 */
int coroutine_fn qcow2_check_metadata_overlap(BlockDriverState *bs,
                                              Qcow2Metadata in_place,
                                              int64_t offset, int64_t bytes);

/*
 * qcow2_write_metadata:
 * qcow2_check_metadata_overlap(), then write @buf to the image file.
 * Every metadata write of the driver goes through it (the caches
 * check, then write, the same way).
 */
int coroutine_fn qcow2_write_metadata(BlockDriverState *bs,
                                      Qcow2Metadata in_place,
                                      int64_t offset, int64_t bytes,
                                      const void *buf);

/* qcow2-snapshot.c */

/*
 * qcow2_read_snapshots:
 * Walk the snapshot table (its size, each snapshot's L1 table location)
 * and, if @writable, collect the snapshots' L2 tables for the overlap
 * check.  Fails on a table past the end of the file, QEMU's limits, or
 * (@writable) an L1 table that is misaligned or outside the file.
 */
int coroutine_fn qcow2_read_snapshots(BlockDriverState *bs, int64_t file_len,
                                      bool writable, Error **errp);
void qcow2_snapshots_free(BDRVQcow2State *s);

/* qcow2-refcount.c */

/* Decode or encode refcount @index of a refcount block (any order). */
uint64_t qcow2_refcount_get(const void *block, int order, uint64_t index);
void qcow2_refcount_set(void *block, int order, uint64_t index,
                        uint64_t value);

/* Read the refcount table at open; checks every entry. */
int coroutine_fn qcow2_refcount_init(BlockDriverState *bs, int64_t file_len,
                                     Error **errp);

/* Recompute s->refcount_table_used after a change of the table. */
void qcow2_refcount_table_changed(BDRVQcow2State *s);

/* Refcount of host cluster @cluster_index (0 past the table). */
int coroutine_fn qcow2_get_refcount(BlockDriverState *bs,
                                    int64_t cluster_index,
                                    uint64_t *refcount);

/*
 * qcow2_alloc_clusters:
 * Allocate @nb_clusters contiguous free host clusters and set their
 * refcounts to 1 (in the refcount cache; refcount blocks and a grown
 * refcount table are written to disk before anything points to them).
 * Returns the host offset or -errno.  Called with s->lock held.
 */
int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs,
                                          int64_t nb_clusters);

/*
 * qcow2_free_clusters:
 * Drop one reference to each host cluster in [@offset, @offset + @bytes)
 * (whole clusters covered by the range).  The refcount cache is made to
 * depend on the L2 cache first, so a dropped refcount never reaches the
 * disk before the L2 entry that stopped using the cluster.  With
 * @pass_discard, clusters whose refcount reaches 0 are discarded in the
 * image file.  Called with s->lock held.
 */
int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, int64_t offset,
                                     int64_t bytes, bool pass_discard);

/*
 * qcow2_free_l2e:
 * Free the host clusters that L2 entry @l2e referred to, if any, after
 * the caller replaced the entry in the L2 cache.  The free is deferred
 * until that change is on disk: the clusters keep their reference (and
 * their data) until qcow2_release_deferred_frees(), so they cannot be
 * reused while a crash would still leave @l2e pointing to them.  Once
 * QCOW2_DEFERRED_FREE_MAX_BYTES are pending, releases them at once.
 * Called with s->lock held and no L2 table pinned.
 */
int coroutine_fn qcow2_free_l2e(BlockDriverState *bs, uint64_t l2e,
                                bool pass_discard);

/*
 * qcow2_release_deferred_frees:
 * If frees are pending, write back the L2 cache and flush the image file
 * (so every unlink queued so far is stable), then free them.  On failure
 * to flush, they stay queued.  Called with s->lock held.
 */
int coroutine_fn qcow2_release_deferred_frees(BlockDriverState *bs);

/*
 * qcow2_alloc_bytes:
 * Allocate @size bytes (at most a cluster) for compressed data, at byte
 * granularity: after the last compressed data if the rest of its host
 * cluster (and, when the data crosses into it, the next host cluster,
 * if that one is free) has room, else at the start of a new host
 * cluster.  The refcount of every host cluster the bytes touch is
 * raised by one (in the refcount cache; the caller makes the L2 cache
 * depend on it before linking).  Returns the host offset or -errno.
 * Called with s->lock held.
 */
int64_t coroutine_fn qcow2_alloc_bytes(BlockDriverState *bs, int64_t size);

/* Increase the refcounts of [@offset, @offset + @bytes) by one. */
int coroutine_fn qcow2_ref_clusters(BlockDriverState *bs, int64_t offset,
                                    int64_t bytes);

/* qcow2-cache.c */

/*
 * qcow2_cache_create:
 * A cache of @num_tables cluster-sized tables of the image file of @bs,
 * evicted least recently used first, holding metadata of kind @kind
 * (which its write-back may rewrite in place; everything else is
 * overlap-checked).  Dirty tables are written back on eviction and on
 * qcow2_cache_write(), after their dependency.
 */
Qcow2Cache *qcow2_cache_create(BlockDriverState *bs, Qcow2Metadata kind,
                               int num_tables, int64_t table_size);
void qcow2_cache_destroy(Qcow2Cache *c);

/*
 * qcow2_cache_get:
 * Pin the table at image file offset @offset (reading it on a miss) and
 * return it in *@table.  Release with qcow2_cache_put().
 */
int coroutine_fn qcow2_cache_get(Qcow2Cache *c, int64_t offset,
                                 void **table);
/* Like qcow2_cache_get(), for a new table: zeroed, nothing is read. */
int coroutine_fn qcow2_cache_get_empty(Qcow2Cache *c, int64_t offset,
                                       void **table);
void qcow2_cache_put(Qcow2Cache *c, void **table);
void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table);

/*
 * qcow2_cache_set_dependency:
 * Dirty tables of @c may only be written once every dirty table of
 * @dependency is on stable storage.  Call it *before* dirtying @c.
 */
int coroutine_fn qcow2_cache_set_dependency(Qcow2Cache *c,
                                            Qcow2Cache *dependency);

/* Write back every dirty table (dependencies first); no final fsync. */
int coroutine_fn qcow2_cache_write(Qcow2Cache *c);
/* qcow2_cache_write(), then flush the image file. */
int coroutine_fn qcow2_cache_flush(Qcow2Cache *c);
/* Forget the table at @offset (its cluster was freed); dirty or not. */
void qcow2_cache_discard(Qcow2Cache *c, int64_t offset);

/* For tests: the offsets cached, least recently used first. */
GArray *qcow2_cache_lru_order(Qcow2Cache *c);

/* qcow2-cluster.c */

/* The I/O paths (BlockDriver callbacks of the qcow2 driver). */
int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset,
                                  int64_t bytes, IOVector *qiov,
                                  BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                   int64_t bytes);
int coroutine_fn qcow2_co_block_status(BlockDriverState *bs,
                                       int64_t offset, int64_t bytes,
                                       int64_t *pnum, int64_t *map,
                                       BlockDriverState **file);

/* qcow2-compress.c */

/*
 * qcow2_co_decompress:
 * Decode the compressed cluster data @src (@src_size bytes, possibly
 * followed by padding) into @dest, which must be filled exactly
 * (@dest_size bytes, the cluster size), with the image's compression
 * type.  Runs on a worker thread.  Returns 0, or -EIO for data that does
 * not decode into a whole cluster.
 */
int coroutine_fn qcow2_co_decompress(BlockDriverState *bs, void *dest,
                                     size_t dest_size, const void *src,
                                     size_t src_size);

/*
 * qcow2_co_compress:
 * Encode the cluster @src (@src_size bytes) into @dest with the image's
 * compression type, on a worker thread.  Returns the encoded size, or
 * -ENOSPC if it does not fit into @dest_size bytes (the caller then
 * stores the data uncompressed), or another -errno.
 */
int coroutine_fn qcow2_co_compress(BlockDriverState *bs, void *dest,
                                   size_t dest_size, const void *src,
                                   size_t src_size);

/* qcow2-create.c */

/*
 * qcow2_co_create:
 * blockdev-create for qcow2 (BlockDriver.bdrv_co_create): check the
 * options as QEMU does and write an empty image onto the node @opts
 * names.  Returns 0 or -errno with *@errp set.
 */
int coroutine_fn qcow2_co_create(BlockdevCreateOptions *opts, Error **errp);

/* qcow2-bitmap-dir.c */

/* Bitmap directory entry flags and type. */
#define QCOW2_BME_IN_USE            (1U << 0)
#define QCOW2_BME_AUTO              (1U << 1)
#define QCOW2_BME_EXTRA_COMPATIBLE  (1U << 2)
#define QCOW2_BME_FLAGS_KNOWN       0x7U
#define QCOW2_BME_TYPE_DIRTY        1
/* QEMU's limits on one bitmap: table entries, bytes of bitmap data. */
#define QCOW2_BME_MAX_TABLE_SIZE    0x8000000ULL
#define QCOW2_BME_MAX_PHYS_SIZE     0x20000000ULL
/* Bitmap table entries: a data cluster, or 0 / 1 (all zeroes / ones). */
#define QCOW2_BME_TABLE_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_BME_TABLE_ALL_ONES    1ULL

/* One bitmap directory entry, decoded; extra data is not supported. */
typedef struct Qcow2BitmapEntry {
    uint64_t table_offset;
    uint32_t table_size;            /* entries */
    uint32_t flags;
    uint8_t type;
    uint8_t granularity_bits;
    char *name;                     /* NUL-terminated copy */
} Qcow2BitmapEntry;

void qcow2_bitmap_entry_free(Qcow2BitmapEntry *e);

/* Bytes entry @e takes in the directory (a multiple of 8). */
uint64_t qcow2_bitmap_entry_size(const Qcow2BitmapEntry *e);

/*
 * qcow2_bitmap_dir_decode:
 * Decode a directory of @nb entries in @buf (@size bytes, which the
 * entries must fill exactly).  Checks the structure: entry sizes, name
 * lengths (1 to 1023, unique), extra data (none), reserved flag bits.
 * Returns a GPtrArray of Qcow2BitmapEntry, or NULL with @errp set.
 */
GPtrArray *qcow2_bitmap_dir_decode(const uint8_t *buf, uint64_t size,
                                   uint32_t nb, Error **errp);

/* Encode @dir into @buf, which has room for qcow2_bitmap_dir_size(). */
uint64_t qcow2_bitmap_dir_size(GPtrArray *dir);
void qcow2_bitmap_dir_encode(GPtrArray *dir, uint8_t *buf);

/* Bitmap table entries for a disk of @disk_size bytes. */
uint64_t qcow2_bitmap_table_entries(int64_t disk_size, uint32_t granularity,
                                    int cluster_bits);

/* A bitmap granularity of 2^@bits is within QEMU's limits. */
bool qcow2_bitmap_check_granularity_bits(int bits, Error **errp);

/*
 * qcow2_bitmap_entry_check:
 * Check entry @e against the image: type, granularity (2^9 to 2^31),
 * bitmap table alignment, size (enough for @disk_size, QEMU's limits)
 * and location inside the file of @file_len bytes.
 */
bool qcow2_bitmap_entry_check(const Qcow2BitmapEntry *e, int cluster_bits,
                              int64_t disk_size, int64_t file_len,
                              Error **errp);

/* qcow2-bitmap.c */

/*
 * The driver's hooks.  qcow2_bitmaps_read_ext() parses the extension
 * while the header is read; qcow2_bitmaps_open() reads and checks the
 * directory, loads every bitmap into a BdrvDirtyBitmap of the node and,
 * read/write, flags them in_use; qcow2_bitmaps_note_write() runs (under
 * s->lock) before every change of guest data and clears the autoclear
 * bits blockd does not maintain; qcow2_bitmaps_close() stores the
 * persistent bitmaps with in_use cleared; qcow2_bitmaps_free() frees
 * the state.  The two BlockDriver callbacks of persistent bitmaps are
 * qcow2_can_store_new_dirty_bitmap() and
 * qcow2_co_remove_persistent_dirty_bitmap() (block/dirty-bitmap.h).
 */
bool qcow2_bitmaps_read_ext(BlockDriverState *bs, const uint8_t *data,
                            uint32_t len, size_t pos, Error **errp);
int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, int64_t file_len,
                                    Error **errp);
int coroutine_fn qcow2_bitmaps_note_write(BlockDriverState *bs);
void qcow2_bitmaps_close(BlockDriverState *bs);
void qcow2_bitmaps_free(BDRVQcow2State *s);
/*
 * For blockdev-reopen (and open and close).  store_all: store every
 * persistent bitmap (in_use cleared) and flush the image, as at close;
 * *errp is set on failure.  mark_in_use: flag every stored bitmap in_use
 * in place, as at a read/write open, but the crash-safe ones, which are
 * tracked instead.  set_readonly: the persistent,
 * consistent bitmaps become (stop being) read-only with the node.
 */
int coroutine_fn qcow2_bitmaps_store_all(BlockDriverState *bs, Error **errp);
int coroutine_fn qcow2_bitmaps_mark_in_use(BlockDriverState *bs,
                                           Error **errp);
void qcow2_bitmaps_set_readonly(BlockDriverState *bs, bool readonly);
bool qcow2_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                      uint32_t granularity, Error **errp);
bool coroutine_fn qcow2_co_remove_persistent_dirty_bitmap(BlockDriverState *bs,
                                                          const char *name,
                                                          Error **errp);

/*
 * The bitmap directory named by an extension in use (autoclear bit set):
 * false if there is none.  Its location is not checked yet.
 */
bool qcow2_bitmaps_dir_location(BDRVQcow2State *s, uint32_t *nb,
                                uint64_t *offset, uint64_t *size);

/*
 * The first of QCOW2_MD_BITMAP_DIRECTORY and QCOW2_MD_BITMAP_TABLE in
 * @checks that overlaps the cluster-aligned range [@start, @end), or
 * QCOW2_MD_NONE.  For qcow2_metadata_overlap().
 */
Qcow2Metadata qcow2_bitmaps_overlap(BDRVQcow2State *s, unsigned checks,
                                    int64_t start, int64_t end);

/*
 * For qcow2-bitmap-crash-safe.c.  qcow2_rewrite_header_extension()
 * replaces extension @type by @len bytes of @data (NULL: removes it),
 * keeping the others, in one write of the header cluster (no flush).
 * qcow2_bitmaps_store_new() stores a new bitmap now (data, table and
 * directory, crash-safely as at close).  qcow2_bitmaps_find() is the
 * directory entry of @name, or NULL.  qcow2_bitmap_read_table() reads
 * and checks @e's bitmap table (host order; g_free).  All with s->lock
 * held.
 */
int coroutine_fn qcow2_rewrite_header_extension(BlockDriverState *bs,
                                                uint32_t type,
                                                const void *data,
                                                uint32_t len, Error **errp);
int coroutine_fn qcow2_bitmaps_store_new(BlockDriverState *bs,
                                         const BdrvDirtyBitmap *bitmap,
                                         Error **errp);
const Qcow2BitmapEntry *qcow2_bitmaps_find(BDRVQcow2State *s,
                                           const char *name);
uint64_t *coroutine_fn qcow2_bitmap_read_table(BlockDriverState *bs,
                                               const Qcow2BitmapEntry *e,
                                               Error **errp);

/* qcow2-bitmap-crash-safe.c */

/*
 * Crash-surviving persistent bitmaps.  qcow2_crash_safe_read_ext()
 * reads the list of names while the header is read;
 * qcow2_crash_safe_track() (at open, read/write) starts tracking stored
 * bitmap @name if the list names it, and says so: the caller then does
 * not flag it in_use.  qcow2_crash_safe_forget() stops tracking @name
 * (removed from the image); qcow2_crash_safe_stored() notes that the
 * bitmaps were stored exactly (clean close); both with the crash-safe
 * lock and s->lock held.  qcow2_crash_safe_lock() excludes marking in
 * progress: take it before s->lock to remove or store bitmaps.  The
 * three driver callbacks are those of block_int-driver.h.
 */
void coroutine_fn qcow2_crash_safe_lock(BlockDriverState *bs);
void qcow2_crash_safe_unlock(BlockDriverState *bs);
void qcow2_crash_safe_read_ext(BlockDriverState *bs, const uint8_t *data,
                               uint32_t len);
bool qcow2_crash_safe_track(BlockDriverState *bs, const char *name);
void coroutine_fn qcow2_crash_safe_forget(BlockDriverState *bs,
                                          const char *name);
void qcow2_crash_safe_stored(BlockDriverState *bs);
void qcow2_crash_safe_free(BDRVQcow2State *s);
bool coroutine_fn qcow2_co_make_dirty_bitmap_crash_safe(BlockDriverState *bs,
                                                        BdrvDirtyBitmap *bitmap,
                                                        Error **errp);
int coroutine_fn qcow2_co_before_dirty_write(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes);
int coroutine_fn qcow2_co_cover_dirty_bitmap(BlockDriverState *bs,
                                             BdrvDirtyBitmap *bitmap);

/* qcow2-repair.c */

/*
 * qcow2_repair_dirty:
 * Opened read/write with the dirty bit set: rebuild every refcount from
 * the metadata, write them (and flush), then clear the dirty bit.  No-op
 * otherwise.  Called at open, before the caches are used.
 */
int coroutine_fn qcow2_repair_dirty(BlockDriverState *bs, int64_t file_len,
                                    Error **errp);

#endif /* BLOCK_QCOW2_H */
