/*
 * qcow2 cluster mapping: L1/L2 lookup and allocation, and the I/O paths.
 *
 * A guest offset maps through the L1 table (in memory) to an L2 table
 * (through the L2 cache) to an L2 entry: unallocated, zero (with or
 * without a preallocated host cluster), a normal host cluster, or a
 * compressed one.  Lookups return a *run*: consecutive clusters of one
 * kind (and, for host clusters, contiguous on the host) within one L2
 * table, so a large request costs one lookup per run, not per cluster.
 *
 * Reads and writes to clusters that are already allocated and owned
 * (COPIED flag: refcount 1) look the run up under s->lock, register the
 * host range as in flight (the allocator will not hand it out again
 * while it is, should a concurrent discard free it), and do the data I/O
 * without the lock, so they run in parallel.
 *
 * A write that needs new clusters (unallocated, zero, compressed or
 * shared clusters) allocates one contiguous host run for the whole guest
 * run under the lock, registers the guest run as an allocation in flight
 * (s->allocs), drops the lock, writes the data together with the
 * copy-on-write head and tail of partial clusters (from the old cluster,
 * the backing node or zeroes) in one vectored write, and takes the lock
 * again to link the run into the L2 table.  Any other request touching a
 * guest cluster with an allocation in flight waits for it first, so two
 * writes never both allocate one cluster and a discard never races with
 * the link.
 *
 * Guest data moves between the request's I/O vector and the image file
 * as slices of that vector, one per run of clusters, and is not copied
 * (compressed clusters excepted: they are decoded into a buffer).
 *
 * Ordering (docs/devel/qcow2.rst): new refcounts reach the disk before
 * the L2 entries that use them (the L2 cache depends on the refcount
 * cache); a new L2 table is written and flushed before the L1 entry that
 * points to it; old clusters are freed only once their changed L2 entry
 * is on disk (qcow2_free_l2e() defers the free until the next flush).
 *
 * A compressed cluster is read (for a guest read, or as the old data of
 * a partial overwrite) by reading its host byte run whole, decoding it
 * into a cluster buffer on a worker thread (qcow2-compress.c) and
 * copying out the requested part.  A guest read registers the run as in
 * flight, so a concurrent overwrite that frees the compressed cluster
 * cannot hand its bytes to another allocation before the read is done.
 * Writing over a compressed cluster allocates a normal one.
 *
 * A compressed write (BDRV_REQ_WRITE_COMPRESSED: whole clusters, the
 * image's last one may be partial and is padded with zeroes) encodes
 * each cluster on a worker thread; a cluster that does not shrink is
 * written as a normal one.  Otherwise the encoded bytes get host bytes
 * of their own (qcow2_alloc_bytes()) and go the way of an allocating
 * write: allocated and registered under the lock, written without it,
 * linked (a compressed descriptor) under the lock.  As in QEMU, a
 * compressed cluster replaces nothing: a guest cluster with a host
 * cluster already fails with -EIO.
 */
#include "block/qcow2/qcow2.h"
#include "block/qcow2/trace.h"

enum {
    /* Where in its buffer the copy-on-write tail starts; see below. */
    QCOW2_COW_BUF_ALIGN = 4096,
};

/* A run of guest clusters of one kind (see get_mapping()). */
typedef struct Qcow2Mapping {
    Qcow2ClusterType type;
    bool copied;                    /* COPIED flag of the run */
    int64_t host;                   /* host offset of the first byte */
    int64_t bytes;                  /* length of the run from the offset */
    uint64_t l2e;                   /* L2 entry of the first cluster */
} Qcow2Mapping;

static int64_t l1_index_of(BDRVQcow2State *s, int64_t offset)
{
    return offset >> (s->cluster_bits + s->l2_bits);
}

static int64_t l2_index_of(BDRVQcow2State *s, int64_t offset)
{
    return (offset >> s->cluster_bits) & (s->l2_entries - 1);
}

static bool same_run(BDRVQcow2State *s, uint64_t first, uint64_t e,
                     int64_t i)
{
    Qcow2ClusterType t = qcow2_l2e_type(first, s->version);

    if (qcow2_l2e_type(e, s->version) != t ||
        (first & QCOW2_OFLAG_COPIED) != (e & QCOW2_OFLAG_COPIED)) {
        return false;
    }
    switch (t) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return (e & QCOW2_L2E_OFFSET_MASK) ==
               (first & QCOW2_L2E_OFFSET_MASK) + (i << s->cluster_bits);
    case QCOW2_CLUSTER_COMPRESSED:
        return false;
    default:
        return true;
    }
}

/*
 * Look up [@offset, @offset + @bytes) and describe its first run in @m.
 * Called with s->lock held.
 */
static int coroutine_fn get_mapping(BlockDriverState *bs, int64_t offset,
                                    int64_t bytes, Qcow2Mapping *m)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t in_cluster = qcow2_offset_into_cluster(s, offset);
    int64_t l2_index = l2_index_of(s, offset);
    int64_t max = MIN(s->l2_entries - l2_index,
                      DIV_ROUND_UP(in_cluster + bytes, s->cluster_size));
    uint64_t l2_offset = s->l1_table[l1_index_of(s, offset)] &
                         QCOW2_L1E_OFFSET_MASK;
    uint64_t *table, first;
    int64_t n = 1;
    int ret;

    *m = (Qcow2Mapping) { .type = QCOW2_CLUSTER_UNALLOCATED };
    if (!l2_offset) {
        m->bytes = MIN(bytes, (max << s->cluster_bits) - in_cluster);
        return 0;
    }
    ret = qcow2_cache_get(s->l2_cache, l2_offset, (void **)&table);
    if (ret < 0) {
        return ret;
    }
    first = GUINT64_FROM_BE(table[l2_index]);
    while (n < max &&
           same_run(s, first, GUINT64_FROM_BE(table[l2_index + n]), n)) {
        n++;
    }
    qcow2_cache_put(s->l2_cache, (void **)&table);

    m->type = qcow2_l2e_type(first, s->version);
    m->copied = first & QCOW2_OFLAG_COPIED;
    m->l2e = first;
    m->bytes = MIN(bytes, (n << s->cluster_bits) - in_cluster);
    if (m->type == QCOW2_CLUSTER_NORMAL ||
        m->type == QCOW2_CLUSTER_ZERO_ALLOC) {
        uint64_t host = first & QCOW2_L2E_OFFSET_MASK;

        if (qcow2_offset_into_cluster(s, host)) {
            return qcow2_signal_corruption(bs, -1, -1, "Cluster allocation offset "
                                           "0x%" PRIx64 " unaligned (L2 "
                                           "offset: 0x%" PRIx64 ")", host,
                                           l2_offset);
        }
        m->host = host + in_cluster;
    }
    return 0;
}

static void inflight_begin(BDRVQcow2State *s, Qcow2InflightIO *io,
                           int64_t host, int64_t bytes)
{
    io->host_start = host;
    io->host_end = host + bytes;
    io->link = (GList) { .data = io };
    g_queue_push_tail_link(&s->inflight, &io->link);
}

static void inflight_end(BDRVQcow2State *s, Qcow2InflightIO *io)
{
    g_queue_unlink(&s->inflight, &io->link);
}

/*
 * Wait (dropping the lock) until no allocation in flight overlaps the
 * clusters of [@offset, @offset + @bytes).  Called with s->lock held.
 */
static void coroutine_fn wait_for_allocs(BDRVQcow2State *s, int64_t offset,
                                         int64_t bytes)
{
    int64_t start = qcow2_start_of_cluster(s, offset);
    int64_t end = offset + bytes;
    bool waited;

    do {
        waited = false;
        for (GList *l = s->allocs.head; l; l = l->next) {
            Qcow2Alloc *a = l->data;

            if (a->guest_start < end && start < a->guest_end) {
                co_mutex_unlock(&s->lock);
                co_queue_wait(&a->waiters);
                co_mutex_lock(&s->lock);
                waited = true;
                break;
            }
        }
    } while (waited);
}

/*
 * Checks before every change of guest data: not marked corrupt; the
 * bitmaps code counts the write and clears the autoclear features blockd
 * does not maintain (all but bitmaps).  Called with s->lock held.
 */
static int coroutine_fn prepare_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->corrupt) {
        return -EIO;
    }
    return qcow2_bitmaps_note_write(bs);
}

/*
 * Read [@offset, +@qiov->size) of @child into @qiov, where @child has
 * data only up to @child_len: the rest reads as zeroes.
 */
static int coroutine_fn read_up_to(BdrvChild *child, int64_t child_len,
                                   int64_t offset, IOVector *qiov)
{
    int64_t n = MAX(0, MIN((int64_t)qiov->size, child_len - offset));
    IOVector part;
    int ret;

    iovector_memset(qiov, n, 0, qiov->size - n);
    if (n == 0) {
        return 0;
    }
    iovector_init_slice(&part, qiov, 0, n);
    ret = bdrv_co_preadv(child, offset, n, &part, 0);
    iovector_destroy(&part);
    return ret;
}

/* Read image file bytes; a part past its end (after a crash) is zero. */
static int coroutine_fn read_host(BlockDriverState *bs, int64_t host,
                                  IOVector *qiov)
{
    return read_up_to(bs->file, bdrv_getlength(bs->file->bs), host, qiov);
}

/* Read what the backing node shows at @offset (zeroes past its end). */
static int coroutine_fn read_backing(BlockDriverState *bs, int64_t offset,
                                     IOVector *qiov)
{
    if (!bs->backing) {
        iovector_memset(qiov, 0, 0, qiov->size);
        return 0;
    }
    return read_up_to(bs->backing, bdrv_getlength(bs->backing->bs), offset,
                      qiov);
}

/*
 * Read guest bytes [@offset, @offset + @bytes) of the compressed cluster
 * described by @l2e: decode the whole cluster, copy out the part.
 */
static int coroutine_fn read_compressed(BlockDriverState *bs, uint64_t l2e,
                                        int64_t offset, IOVector *qiov)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *cluster = NULL;
    g_autofree uint8_t *data = NULL;
    IOVector data_vec;
    int64_t host, csize;
    int ret;

    qcow2_compressed_range(l2e, s->cluster_bits, &host, &csize);
    data = g_try_malloc(csize);
    cluster = g_try_malloc(s->cluster_size);
    if (!data || !cluster) {
        return -ENOMEM;
    }
    iovector_init_buf(&data_vec, data, csize);
    ret = read_host(bs, host, &data_vec);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_co_decompress(bs, cluster, s->cluster_size, data, csize);
    if (ret < 0) {
        return ret;
    }
    iovector_from_buf(qiov, 0, cluster + qcow2_offset_into_cluster(s, offset),
                      qiov->size);
    return 0;
}

/*
 * Read guest bytes [@offset, @offset + @bytes), all in one cluster whose
 * L2 entry was @l2e, for copy-on-write.  The caller owns the cluster
 * through an allocation in flight, so its old host cluster stays.
 */
static int coroutine_fn read_old_cluster(BlockDriverState *bs, uint64_t l2e,
                                         int64_t offset, int64_t bytes,
                                         void *buf)
{
    BDRVQcow2State *s = bs->opaque;
    IOVector qiov;

    iovector_init_buf(&qiov, buf, bytes);
    switch (qcow2_l2e_type(l2e, s->version)) {
    case QCOW2_CLUSTER_UNALLOCATED:
        return read_backing(bs, offset, &qiov);
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        memset(buf, 0, bytes);
        return 0;
    case QCOW2_CLUSTER_NORMAL:
        return read_host(bs, (l2e & QCOW2_L2E_OFFSET_MASK) +
                         qcow2_offset_into_cluster(s, offset), &qiov);
    case QCOW2_CLUSTER_COMPRESSED:
        return read_compressed(bs, l2e, offset, &qiov);
    default:
        return -ENOTSUP;
    }
}

/*
 * Each run of clusters reads into its slice of @qiov (@qiov itself when
 * one run serves the whole request).
 */
int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    size_t done = 0;

    while (bytes > 0) {
        Qcow2Mapping m;
        Qcow2InflightIO io;
        IOVector slice, *part;
        int ret;

        co_mutex_lock(&s->lock);
        ret = get_mapping(bs, offset, bytes, &m);
        if (ret == 0 && m.type == QCOW2_CLUSTER_NORMAL) {
            inflight_begin(s, &io, m.host, m.bytes);
        } else if (ret == 0 && m.type == QCOW2_CLUSTER_COMPRESSED) {
            int64_t host, csize;

            qcow2_compressed_range(m.l2e, s->cluster_bits, &host, &csize);
            inflight_begin(s, &io, host, csize);
        }
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }

        part = iovector_window(qiov, done, m.bytes, &slice);
        switch (m.type) {
        case QCOW2_CLUSTER_UNALLOCATED:
            ret = read_backing(bs, offset, part);
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            iovector_memset(part, 0, 0, m.bytes);
            break;
        case QCOW2_CLUSTER_NORMAL:
            BLKDBG_EVENT(bs->file, BLKDBG_READ_AIO);
            ret = read_host(bs, m.host, part);
            inflight_end(s, &io);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            ret = read_compressed(bs, m.l2e, offset, part);
            inflight_end(s, &io);
            break;
        }
        iovector_destroy(&slice);
        if (ret < 0) {
            return ret;
        }
        offset += m.bytes;
        bytes -= m.bytes;
        done += m.bytes;
    }
    return 0;
}

/*
 * Make the L2 table for L1 entry @l1_index exist and be owned by the
 * active L1 table (COPIED), allocating or copying it, and pin it in
 * *@table.  The new table is written and flushed (after its refcount)
 * before the L1 entry points to it.  Called with s->lock held.
 */
static int coroutine_fn get_l2_for_write(BlockDriverState *bs,
                                         int64_t l1_index, uint64_t **table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t old = l1e & QCOW2_L1E_OFFSET_MASK;
    uint64_t *new_table, *old_table;
    uint64_t be;
    int64_t new;
    int ret;

    if (old && (l1e & QCOW2_OFLAG_COPIED)) {
        return qcow2_cache_get(s->l2_cache, old, (void **)table);
    }
    new = qcow2_alloc_clusters(bs, 1);
    if (new < 0) {
        return new;
    }
    ret = qcow2_cache_set_dependency(s->l2_cache, s->refcount_cache);
    if (ret == 0) {
        ret = qcow2_cache_get_empty(s->l2_cache, new, (void **)&new_table);
    }
    if (ret < 0) {
        qcow2_free_clusters(bs, new, s->cluster_size, false);
        return ret;
    }
    if (old) {
        /* Shared with a snapshot: the copy refers to the same clusters. */
        BLKDBG_EVENT(bs->file, BLKDBG_L2_ALLOC_COW_READ);
        ret = qcow2_cache_get(s->l2_cache, old, (void **)&old_table);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, (void **)&new_table);
            qcow2_cache_discard(s->l2_cache, new);
            qcow2_free_clusters(bs, new, s->cluster_size, false);
            return ret;
        }
        memcpy(new_table, old_table, s->cluster_size);
        qcow2_cache_put(s->l2_cache, (void **)&old_table);
    }
    qcow2_cache_mark_dirty(s->l2_cache, new_table);
    qcow2_cache_put(s->l2_cache, (void **)&new_table);

    BLKDBG_EVENT(bs->file, BLKDBG_L2_ALLOC_WRITE);
    ret = qcow2_cache_flush(s->l2_cache);
    if (ret < 0) {
        /*
         * Nothing points to the new table yet: forget it and free its
         * cluster.  Left dirty in the cache, it would fail every later
         * flush the same way (ENOSPC: it lies past the end of a full
         * file), and its cluster would leak at close.
         */
        qcow2_cache_discard(s->l2_cache, new);
        qcow2_free_clusters(bs, new, s->cluster_size, false);
        return ret;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_L1_UPDATE);
    be = GUINT64_TO_BE((uint64_t)new | QCOW2_OFLAG_COPIED);
    ret = qcow2_write_metadata(bs, QCOW2_MD_ACTIVE_L1,
                               s->l1_table_offset + l1_index * 8, 8, &be);
    if (ret < 0) {
        return ret;
    }
    s->l1_table[l1_index] = (uint64_t)new | QCOW2_OFLAG_COPIED;
    if (old) {
        /* The L1 entry must be stable before the old table's refcount. */
        ret = bdrv_co_flush(bs->file->bs);
        if (ret == 0) {
            ret = qcow2_free_clusters(bs, old, s->cluster_size, false);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return qcow2_cache_get(s->l2_cache, new, (void **)table);
}

/* Whether an L2 entry needs a new cluster before data can be written. */
static bool needs_alloc(BDRVQcow2State *s, uint64_t l2e)
{
    return qcow2_l2e_type(l2e, s->version) != QCOW2_CLUSTER_NORMAL ||
           !(l2e & QCOW2_OFLAG_COPIED);
}

/*
 * Link the guest clusters from @guest_start (@n of them, within one L2
 * table) to new host data, and free what they replace.  Entry i is
 * @first_l2e plus i clusters: a run of normal clusters, or (n = 1) a
 * compressed descriptor.  Fails without changing anything, or succeeds
 * (a failure to free an old cluster only leaks it).  Called with s->lock
 * held.
 */
static int coroutine_fn link_clusters(BlockDriverState *bs,
                                      int64_t guest_start, int64_t n,
                                      uint64_t first_l2e)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t l2_index = l2_index_of(s, guest_start);
    g_autofree uint64_t *olds = g_new(uint64_t, n);
    uint64_t *table;
    int ret;

    ret = get_l2_for_write(bs, l1_index_of(s, guest_start), &table);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_cache_set_dependency(s->l2_cache, s->refcount_cache);
    if (ret < 0) {
        qcow2_cache_put(s->l2_cache, (void **)&table);
        return ret;
    }
    for (int64_t i = 0; i < n; i++) {
        olds[i] = GUINT64_FROM_BE(table[l2_index + i]);
        table[l2_index + i] =
            GUINT64_TO_BE(first_l2e + ((uint64_t)i << s->cluster_bits));
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    qcow2_cache_put(s->l2_cache, (void **)&table);
    for (int64_t i = 0; i < n; i++) {
        qcow2_free_l2e(bs, olds[i], s->pass_discard_other);
    }
    return 0;
}

/*
 * Write guest data and the copy-on-write head and tail of its first and
 * last cluster into the new clusters at @host, which the caller
 * overlap-checked under s->lock: one vectored write of [old head][@data]
 * [old tail], so the guest's bytes are not copied.  The tail buffer
 * starts at a page boundary, so that O_DIRECT below can take it as it is.
 */
static int coroutine_fn write_with_cow(BlockDriverState *bs,
                                       int64_t cluster_start, int64_t n,
                                       int64_t host, uint64_t head_l2e,
                                       uint64_t tail_l2e, int64_t offset,
                                       IOVector *data)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t bytes = data->size;
    int64_t run = n << s->cluster_bits;
    int64_t head = offset - cluster_start;
    int64_t tail = run - head - bytes;
    int64_t tail_at = ALIGN_UP(head, QCOW2_COW_BUF_ALIGN);
    IOVector vec;
    uint8_t *cow;
    int ret = 0;

    if (!head && !tail) {
        return bdrv_co_pwritev(bs->file, host, bytes, data, 0);
    }
    cow = blk_memalign(tail_at + tail);
    if (!cow) {
        return -ENOMEM;
    }
    if (head) {
        ret = read_old_cluster(bs, head_l2e, cluster_start, head, cow);
    }
    if (ret == 0 && tail) {
        ret = read_old_cluster(bs, tail_l2e, offset + bytes, tail,
                               cow + tail_at);
    }
    if (ret == 0) {
        iovector_init(&vec);
        iovector_add(&vec, cow, head);
        iovector_add_slice(&vec, data, 0, bytes);
        iovector_add(&vec, cow + tail_at, tail);
        ret = bdrv_co_pwritev(bs->file, host, run, &vec, 0);
        iovector_destroy(&vec);
    }
    blk_vfree(cow);
    return ret;
}

/*
 * Register guest clusters [@start, @end) as an allocation in flight:
 * every other request touching them waits in wait_for_allocs() until
 * alloc_end().  Called with s->lock held.
 */
static void alloc_begin(BDRVQcow2State *s, Qcow2Alloc *alloc, int64_t start,
                        int64_t end)
{
    alloc->guest_start = start;
    alloc->guest_end = end;
    alloc->link = (GList) { .data = alloc };
    co_queue_init(&alloc->waiters);
    g_queue_push_tail_link(&s->allocs, &alloc->link);
}

static void alloc_end(BDRVQcow2State *s, Qcow2Alloc *alloc)
{
    g_queue_unlink(&s->allocs, &alloc->link);
    co_queue_restart_all(&alloc->waiters);
}

/*
 * Write the first run of [@offset, @offset + @bytes), whose data is
 * @qiov from @qiov_offset, that needs new clusters; *@done is set to the
 * bytes written.  Called with s->lock held; returns with it released.
 */
static int coroutine_fn alloc_write(BlockDriverState *bs, int64_t offset,
                                    int64_t bytes, IOVector *qiov,
                                    size_t qiov_offset, int64_t *done)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t cluster_start = qcow2_start_of_cluster(s, offset);
    int64_t l2_index = l2_index_of(s, offset);
    int64_t n = MIN(s->l2_entries - l2_index,
                    qcow2_size_to_clusters(s, offset - cluster_start +
                                           bytes));
    uint64_t l2_offset = s->l1_table[l1_index_of(s, offset)] &
                         QCOW2_L1E_OFFSET_MASK;
    uint64_t head_l2e = 0, tail_l2e = 0;
    Qcow2Alloc alloc;
    IOVector data;
    int64_t host, end;
    int ret;

    if (l2_offset) {
        uint64_t *table;
        int64_t i;

        ret = qcow2_cache_get(s->l2_cache, l2_offset, (void **)&table);
        if (ret < 0) {
            co_mutex_unlock(&s->lock);
            return ret;
        }
        head_l2e = GUINT64_FROM_BE(table[l2_index]);
        for (i = 1; i < n; i++) {
            if (!needs_alloc(s, GUINT64_FROM_BE(table[l2_index + i]))) {
                break;
            }
        }
        n = i;
        tail_l2e = GUINT64_FROM_BE(table[l2_index + n - 1]);
        qcow2_cache_put(s->l2_cache, (void **)&table);
    }
    host = qcow2_alloc_clusters(bs, n);
    if (host < 0) {
        co_mutex_unlock(&s->lock);
        return host;
    }
    ret = qcow2_check_metadata_overlap(bs, QCOW2_MD_NONE, host,
                                       n << s->cluster_bits);
    if (ret < 0) {
        /* The image is corrupt now: nothing is written any more. */
        qcow2_free_clusters(bs, host, n << s->cluster_bits, false);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    trace_qcow2_alloc_write(bs, cluster_start, n, host);
    alloc_begin(s, &alloc, cluster_start,
                cluster_start + (n << s->cluster_bits));
    co_mutex_unlock(&s->lock);

    end = MIN(offset + bytes, alloc.guest_end);
    BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
    iovector_init_slice(&data, qiov, qiov_offset, end - offset);
    ret = write_with_cow(bs, cluster_start, n, host, head_l2e, tail_l2e,
                         offset, &data);
    iovector_destroy(&data);

    co_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = link_clusters(bs, cluster_start, n,
                            (uint64_t)host | QCOW2_OFLAG_COPIED);
    }
    if (ret < 0) {
        qcow2_free_clusters(bs, host, n << s->cluster_bits, false);
    }
    alloc_end(s, &alloc);
    co_mutex_unlock(&s->lock);
    *done = end - offset;
    return ret;
}

/*
 * Store @csize bytes of @cdata as the compressed cluster at guest offset
 * @offset (cluster aligned).  Host bytes are allocated and the guest
 * cluster registered under the lock, the data written without it, and
 * the descriptor linked under it again (after the refcounts, through
 * the cache dependency), as for any allocating write.
 */
static int coroutine_fn write_compressed_cluster(BlockDriverState *bs,
                                                 int64_t offset,
                                                 const void *cdata,
                                                 int64_t csize)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Alloc alloc;
    Qcow2Mapping m;
    uint64_t l2e = 0;
    int64_t host = 0;
    int ret;

    co_mutex_lock(&s->lock);
    ret = prepare_write(bs);
    if (ret == 0) {
        wait_for_allocs(s, offset, s->cluster_size);
        ret = get_mapping(bs, offset, 1, &m);
    }
    if (ret == 0 && m.type != QCOW2_CLUSTER_UNALLOCATED &&
        m.type != QCOW2_CLUSTER_ZERO_PLAIN) {
        ret = -EIO;     /* it would replace a host cluster: QEMU's error */
    }
    if (ret == 0) {
        host = qcow2_alloc_bytes(bs, csize);
        ret = host < 0 ? host : 0;
    }
    if (ret == 0) {
        l2e = qcow2_compressed_l2e(host, csize, s->cluster_bits);
        ret = l2e ? qcow2_check_metadata_overlap(bs, QCOW2_MD_NONE, host,
                                                 csize)
                  : -EFBIG;
        if (ret < 0) {
            qcow2_free_clusters(bs, host, csize, false);
        }
    }
    if (ret < 0) {
        co_mutex_unlock(&s->lock);
        return ret;
    }
    trace_qcow2_write_compressed(bs, offset, csize, host);
    alloc_begin(s, &alloc, offset, offset + s->cluster_size);
    co_mutex_unlock(&s->lock);

    BLKDBG_EVENT(bs->file, BLKDBG_WRITE_COMPRESSED);
    ret = bdrv_co_pwrite(bs->file, host, csize, cdata, 0);

    co_mutex_lock(&s->lock);
    if (ret == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_L2_UPDATE_COMPRESSED);
        ret = link_clusters(bs, offset, 1, l2e);
    }
    if (ret < 0) {
        qcow2_free_clusters(bs, host, csize, false);
    }
    alloc_end(s, &alloc);
    co_mutex_unlock(&s->lock);
    return ret;
}

/*
 * BDRV_REQ_WRITE_COMPRESSED: each cluster of [@offset, @offset + @bytes)
 * is encoded, and stored compressed if that makes it smaller than a
 * cluster, else as a normal cluster (as QEMU does).  The image's last
 * cluster may be partial: it is encoded padded with zeroes.
 */
static int coroutine_fn write_compressed(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes,
                                         IOVector *qiov)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *cluster = NULL;
    g_autofree uint8_t *cdata = NULL;
    int ret = 0;

    if (qcow2_offset_into_cluster(s, offset) ||
        (qcow2_offset_into_cluster(s, bytes) &&
         offset + bytes != bs->total_bytes)) {
        return -EINVAL;
    }
    cluster = g_try_malloc(s->cluster_size);
    cdata = g_try_malloc(s->cluster_size - 1);
    if (!cluster || !cdata) {
        return -ENOMEM;
    }
    for (int64_t done = 0; ret == 0 && done < bytes;
         done += s->cluster_size) {
        int64_t n = MIN(bytes - done, s->cluster_size);
        int csize;

        iovector_to_buf(qiov, done, cluster, n);
        memset(cluster + n, 0, s->cluster_size - n);
        csize = qcow2_co_compress(bs, cdata, s->cluster_size - 1, cluster,
                                  s->cluster_size);
        if (csize == -ENOSPC) {
            IOVector slice;

            iovector_init_slice(&slice, qiov, done, n);
            ret = qcow2_co_pwritev(bs, offset + done, n, &slice, 0);
            iovector_destroy(&slice);
        } else if (csize < 0) {
            ret = csize;
        } else {
            ret = write_compressed_cluster(bs, offset + done, cdata, csize);
        }
    }
    return ret;
}

/*
 * Each run of clusters is written from its slice of @qiov (@qiov itself
 * when one run serves the whole request).
 */
int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset,
                                  int64_t bytes, IOVector *qiov,
                                  BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    size_t written = 0;

    if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        return write_compressed(bs, offset, bytes, qiov);
    }
    while (bytes > 0) {
        Qcow2Mapping m;
        Qcow2InflightIO io;
        int64_t done = 0;
        int ret;

        co_mutex_lock(&s->lock);
        ret = prepare_write(bs);
        if (ret == 0) {
            wait_for_allocs(s, offset, bytes);
            ret = get_mapping(bs, offset, bytes, &m);
        }
        if (ret < 0) {
            co_mutex_unlock(&s->lock);
            return ret;
        }
        if (m.type == QCOW2_CLUSTER_NORMAL && m.copied) {
            ret = qcow2_check_metadata_overlap(bs, QCOW2_MD_NONE, m.host,
                                               m.bytes);
            inflight_begin(s, &io, m.host, m.bytes);
            co_mutex_unlock(&s->lock);
            BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
            if (ret == 0) {
                IOVector slice;
                IOVector *part = iovector_window(qiov, written, m.bytes,
                                                 &slice);

                ret = bdrv_co_pwritev(bs->file, m.host, m.bytes, part, 0);
                iovector_destroy(&slice);
            }
            inflight_end(s, &io);
            done = m.bytes;
        } else {
            ret = alloc_write(bs, offset, bytes, qiov, written, &done);
        }
        if (ret < 0) {
            return ret;
        }
        offset += done;
        bytes -= done;
        written += done;
    }
    return 0;
}

/* Whether guest clusters of kind @m already read as zeroes. */
static bool reads_zero(BlockDriverState *bs, const Qcow2Mapping *m)
{
    return m->type == QCOW2_CLUSTER_ZERO_PLAIN ||
           m->type == QCOW2_CLUSTER_ZERO_ALLOC ||
           (m->type == QCOW2_CLUSTER_UNALLOCATED && !bs->backing);
}

/* Zero part of one cluster: nothing if it reads zeroes, else write. */
static int coroutine_fn zero_partial(BlockDriverState *bs, int64_t offset,
                                     int64_t bytes, BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree void *zeroes = NULL;
    IOVector qiov;
    Qcow2Mapping m;
    int ret;

    co_mutex_lock(&s->lock);
    wait_for_allocs(s, offset, bytes);
    ret = get_mapping(bs, offset, bytes, &m);
    co_mutex_unlock(&s->lock);
    if (ret < 0 || reads_zero(bs, &m)) {
        return ret;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        return -ENOTSUP;
    }
    zeroes = g_malloc0(bytes);
    iovector_init_buf(&qiov, zeroes, bytes);
    return qcow2_co_pwritev(bs, offset, bytes, &qiov, 0);
}

/*
 * Rewrite the L2 entries of whole clusters [@start, @end) (within one L2
 * table) for write-zeroes (@discard false) or discard.  Called with
 * s->lock held.
 */
static int coroutine_fn clear_clusters(BlockDriverState *bs, int64_t start,
                                       int64_t end, bool discard,
                                       BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t l1_index = l1_index_of(s, start);
    int64_t l2_index = l2_index_of(s, start);
    int64_t n = (end - start) >> s->cluster_bits;
    bool unmap = discard || (flags & BDRV_REQ_MAY_UNMAP);
    bool pass = unmap ? s->pass_discard_request : s->pass_discard_other;
    g_autofree uint64_t *freed = g_new0(uint64_t, n);
    uint64_t *table;
    int ret;

    if (!(s->l1_table[l1_index] & QCOW2_L1E_OFFSET_MASK) && !bs->backing) {
        return 0;       /* the whole table reads zeroes already */
    }
    ret = get_l2_for_write(bs, l1_index, &table);
    if (ret < 0) {
        return ret;
    }
    for (int64_t i = 0; i < n; i++) {
        uint64_t old = GUINT64_FROM_BE(table[l2_index + i]);
        Qcow2ClusterType t = qcow2_l2e_type(old, s->version);
        uint64_t new;

        if (t == QCOW2_CLUSTER_UNALLOCATED && !bs->backing) {
            continue;
        }
        if (discard) {
            new = bs->backing ? QCOW2_OFLAG_ZERO : 0;
        } else if (!unmap && (old & QCOW2_OFLAG_COPIED) &&
                   (t == QCOW2_CLUSTER_NORMAL ||
                    t == QCOW2_CLUSTER_ZERO_ALLOC)) {
            /* Keep the allocation, read zeroes. */
            new = (old & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COPIED)) |
                  QCOW2_OFLAG_ZERO;
        } else {
            new = QCOW2_OFLAG_ZERO;
        }
        if (new == old) {
            continue;
        }
        if (!(new & QCOW2_L2E_OFFSET_MASK)) {
            freed[i] = old;
        }
        table[l2_index + i] = GUINT64_TO_BE(new);
        qcow2_cache_mark_dirty(s->l2_cache, table);
    }
    qcow2_cache_put(s->l2_cache, (void **)&table);
    for (int64_t i = 0; i < n; i++) {
        if (freed[i]) {
            qcow2_free_l2e(bs, freed[i], pass);
        }
    }
    return 0;
}

/* Apply clear_clusters() to whole clusters [@start, @end). */
static int coroutine_fn clear_range(BlockDriverState *bs, int64_t start,
                                    int64_t end, bool discard,
                                    BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t table_bytes = s->cluster_size << s->l2_bits;

    while (start < end) {
        int64_t chunk_end = MIN(end, ALIGN_DOWN(start, table_bytes) +
                                     table_bytes);
        int ret;

        co_mutex_lock(&s->lock);
        ret = prepare_write(bs);
        if (ret == 0) {
            wait_for_allocs(s, start, chunk_end - start);
            ret = clear_clusters(bs, start, chunk_end, discard, flags);
        }
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        start = chunk_end;
    }
    return 0;
}

/*
 * The whole clusters in [@offset, @offset + @bytes): the last, partial
 * cluster of the image counts as whole when the range reaches the end.
 */
static void whole_clusters(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, int64_t *start, int64_t *end)
{
    BDRVQcow2State *s = bs->opaque;

    *start = ALIGN_UP(offset, s->cluster_size);
    *end = offset + bytes == bs->total_bytes
           ? ALIGN_UP(offset + bytes, s->cluster_size)
           : ALIGN_DOWN(offset + bytes, s->cluster_size);
    if (*end < *start) {
        *end = *start;
    }
}

int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t end = offset + bytes;
    int64_t head_end = MIN(end, ALIGN_UP(offset, s->cluster_size));
    int64_t tail_start = MAX(head_end, ALIGN_DOWN(end, s->cluster_size));
    int64_t clear_end = tail_start;
    int ret = 0;

    if (s->version < 3) {
        return -ENOTSUP;    /* no zero flag: the core writes zeroes */
    }
    if (end == bs->total_bytes && tail_start < end && head_end < end) {
        /* The image's last, partial cluster counts as whole. */
        tail_start = end;
        clear_end = ALIGN_UP(end, s->cluster_size);
    }
    if (head_end > offset) {
        ret = zero_partial(bs, offset, head_end - offset, flags);
    }
    if (ret == 0 && clear_end > head_end) {
        ret = clear_range(bs, head_end, clear_end, false, flags);
    }
    if (ret == 0 && end > tail_start) {
        ret = zero_partial(bs, tail_start, end - tail_start, flags);
    }
    return ret;
}

int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                   int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t start, end;

    if (s->version < 3 && bs->backing) {
        return -ENOTSUP;    /* no zero flag to hide the backing data */
    }
    whole_clusters(bs, offset, bytes, &start, &end);
    if (start >= end) {
        return 0;
    }
    return clear_range(bs, start, end, true, 0);
}

int coroutine_fn qcow2_co_block_status(BlockDriverState *bs,
                                       int64_t offset, int64_t bytes,
                                       int64_t *pnum, int64_t *map,
                                       BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Mapping m;
    int ret;

    co_mutex_lock(&s->lock);
    ret = get_mapping(bs, offset, bytes, &m);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = m.bytes;
    switch (m.type) {
    case QCOW2_CLUSTER_NORMAL:
        *map = m.host;
        *file = bs->file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    case QCOW2_CLUSTER_COMPRESSED:
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    default:
        /* Unallocated: the core asks the backing chain. */
        return 0;
    }
}
