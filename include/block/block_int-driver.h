/*
 * The block driver interface: what a driver implements (BlockDriver) and
 * the types it fills in.  Only block/ and its drivers include this, through
 * block/block_int.h.
 *
 * Contract between core and drivers (see block/io.c): every request a
 * driver sees has been checked by the core.  Offsets and lengths are
 * within the node, aligned to bs->bl.request_alignment, no longer than
 * bs->bl.max_transfer; every element of the I/O vector starts at a
 * multiple of bs->bl.min_mem_alignment and is a multiple of
 * bs->bl.request_alignment long; and flags are a subset of what the
 * driver declared it supports.
 * Drivers return 0 (or a status) or -errno, and never allocate an Error
 * on the data path.
 */
#ifndef BLOCK_BLOCK_INT_DRIVER_H
#define BLOCK_BLOCK_INT_DRIVER_H

#include "block/block.h"
#include "qapi/qapi-types.h"
#include "util/coroutine.h"
#include "util/iov.h"

typedef struct BlockdevRef BlockdevRef;
typedef struct BlockdevCreateOptions BlockdevCreateOptions;

/* What a child is to its parent. */
typedef enum BdrvChildRole {
    BDRV_CHILD_DATA     = 0x1,   /* guest data lives here */
    BDRV_CHILD_METADATA = 0x2,   /* format metadata lives here */
    BDRV_CHILD_FILTERED = 0x4,   /* the parent is a filter over it */
    BDRV_CHILD_COW      = 0x8,   /* a backing file */
    BDRV_CHILD_PRIMARY  = 0x10,  /* the child named "file" */
} BdrvChildRole;

/* Image facts for queries (ImageInfo). */
typedef struct BlockDriverInfo {
    int64_t cluster_size;           /* 0: the format has no clusters */
    bool is_dirty;                  /* not closed cleanly (dirty bit) */
} BlockDriverInfo;

typedef struct BlockLimits {
    uint32_t request_alignment;     /* bytes, power of 2 */
    uint32_t min_mem_alignment;     /* buffer address alignment */
    uint32_t max_transfer;          /* bytes, multiple of alignment */
} BlockLimits;

/* A copy offload step: see bdrv_co_copy_range_from/_to below. */
typedef int coroutine_fn BdrvCopyRangeFunc(BlockDriverState *bs,
                                           BdrvChild *src, int64_t src_offset,
                                           BdrvChild *dst, int64_t dst_offset,
                                           int64_t bytes,
                                           BdrvRequestFlags flags);

struct BlockDriver {
    const char *format_name;
    size_t instance_size;
    /* A filter passes data through to its one primary child. */
    bool is_filter;
    /*
     * blockdev-reopen may switch read-only on and off.  A driver that
     * keeps something depending on it (an fd's open mode) prepares the
     * switch in bdrv_reopen_prepare and makes it in bdrv_reopen_commit, or
     * drops it in bdrv_reopen_abort; commit and abort may be called more
     * than once and do nothing the second time.
     */
    bool can_reopen_read_only;
    /*
     * The node grows when written past its end (a regular file): a
     * parent holding BLK_PERM_RESIZE may write there, and the core then
     * extends total_bytes.  Format drivers allocate clusters this way.
     */
    bool has_variable_length;
    /*
     * A flush of the node reaches only its file child, not every child
     * it writes to (copy-before-write: its target needs no durability
     * with the guest's data).
     */
    bool flush_primary_only;
    /* Flags the driver handles itself on writes and write-zeroes. */
    BdrvRequestFlags supported_write_flags;
    BdrvRequestFlags supported_zero_flags;

    /*
     * Open the node from @options; set bs->total_bytes and bs->bl.
     * Called in coroutine context.
     */
    int coroutine_fn (*bdrv_open)(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp);
    void (*bdrv_close)(BlockDriverState *bs);

    /*
     * blockdev-create: create an image as @opts (whose driver is this
     * one) describes.  Runs in the create job's coroutine; returns 0 or
     * -errno with *errp set.  NULL: the driver cannot create images.
     */
    int coroutine_fn (*bdrv_co_create)(BlockdevCreateOptions *opts,
                                       Error **errp);

    /*
     * Read [@offset, @offset + @bytes) into @qiov, or write it from
     * @qiov.  @qiov holds exactly @bytes (the caller's window is already
     * sliced out: see docs/devel/block-layer.rst); a write only reads the
     * memory it describes.  A driver passing the request on passes @qiov
     * or slices of it, so that no layer copies data it does not change.
     */
    int coroutine_fn (*bdrv_co_preadv)(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags);
    int coroutine_fn (*bdrv_co_pwritev)(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov,
                                        BdrvRequestFlags flags);
    /* May return -ENOTSUP: the core then writes a zeroed buffer. */
    int coroutine_fn (*bdrv_co_pwrite_zeroes)(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags);
    int coroutine_fn (*bdrv_co_pdiscard)(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes);
    /*
     * Copy offload: copy [@src_offset, +@bytes) of @src's node to @dst's
     * node at @dst_offset without the data passing through the daemon.
     * The core calls _from on the source's driver (@src->bs is @bs), which
     * passes the request down its own child or, at the bottom, on to
     * bdrv_co_copy_range_to(); _to is called on the destination's driver
     * (@dst->bs is @bs), which passes it down or copies.  -ENOTSUP (or a
     * NULL callback): no offload here; the caller reads and writes.
     */
    BdrvCopyRangeFunc *bdrv_co_copy_range_from;
    BdrvCopyRangeFunc *bdrv_co_copy_range_to;
    /* Make this node's own writes stable; the core flushes children. */
    int coroutine_fn (*bdrv_co_flush)(BlockDriverState *bs);
    /*
     * Block status of [@offset, @offset + @bytes): BDRV_BLOCK_* bits for
     * the first *@pnum bytes.  A driver that maps the range 1:1 onto a
     * child at *@map returns BDRV_BLOCK_RAW with *@file set, and the core
     * asks the child.
     */
    int coroutine_fn (*bdrv_co_block_status)(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, int64_t *map,
                                             BlockDriverState **file);

    /* Bytes the image occupies on its storage, or -ENOTSUP. */
    int64_t (*bdrv_get_allocated_file_size)(BlockDriverState *bs);

    /*
     * Fill @bdi for queries; -errno (NULL callback: -ENOTSUP) leaves
     * ImageInfo without cluster-size and dirty-flag, as in QEMU.
     */
    int (*bdrv_get_info)(BlockDriverState *bs, BlockDriverInfo *bdi);
    /* The format-specific part of ImageInfo; NULL callback: none. */
    ImageInfoSpecific *(*bdrv_get_specific_info)(BlockDriverState *bs);

    /*
     * Persistent dirty bitmaps (NULL: the driver cannot store them; see
     * block/dirty-bitmap.h).  can_store_new checks that a new bitmap
     * could be stored at close, with the driver's reason prefixed as
     * QEMU does; remove_persistent deletes a stored bitmap now, and
     * succeeds if the image has none of that name.
     */
    bool (*bdrv_can_store_new_dirty_bitmap)(BlockDriverState *bs,
                                            const char *name,
                                            uint32_t granularity,
                                            Error **errp);
    bool coroutine_fn (*bdrv_co_remove_persistent_dirty_bitmap)(
        BlockDriverState *bs, const char *name, Error **errp);
    /*
     * Crash-surviving persistent bitmaps (NULL: not supported; see
     * block/dirty-bitmap.h).  make_crash_safe stores @bitmap now and
     * keeps its stored copy a superset from then on; before_dirty_write
     * runs before every write, write-zeroes and discard of the node and
     * widens the stored copies to cover it; cover_dirty_bitmap widens
     * the stored copy of @bitmap to every bit it has (after a merge).
     */
    bool coroutine_fn (*bdrv_co_make_dirty_bitmap_crash_safe)(
        BlockDriverState *bs, BdrvDirtyBitmap *bitmap, Error **errp);
    int coroutine_fn (*bdrv_co_before_dirty_write)(BlockDriverState *bs,
                                                   int64_t offset,
                                                   int64_t bytes);
    int coroutine_fn (*bdrv_co_cover_dirty_bitmap)(BlockDriverState *bs,
                                                   BdrvDirtyBitmap *bitmap);

    /*
     * How much @buf (the first bytes of a file) looks like this format:
     * 0 not at all, up to 100 certainly.  Used to find the format of a
     * backing file whose image does not record it.
     */
    int (*bdrv_probe)(const uint8_t *buf, int buf_size);

    /*
     * Permissions to take on @child, given what the parents of @bs take
     * in total.  NULL means "pass the parents' permissions through".
     */
    void (*bdrv_child_perm)(BlockDriverState *bs, BdrvChild *child,
                            uint64_t parent_perm, uint64_t parent_shared,
                            uint64_t *nperm, uint64_t *nshared);

    /*
     * The parents of @bs are about to take @perm and share @shared in
     * total: fail if the node cannot allow that (e.g. another process
     * holds a conflicting image lock).  On success the driver may keep
     * what it reserved for the new permissions (taken image locks) until
     * bdrv_set_perm or bdrv_abort_perm is called; on failure it must
     * already have undone its own reservations.
     */
    bool (*bdrv_check_perm)(BlockDriverState *bs, uint64_t perm,
                            uint64_t shared, Error **errp);
    /* The parents' permissions changed to @perm/@shared (or relaxed). */
    void (*bdrv_set_perm)(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared);
    /*
     * The change that bdrv_check_perm approved (if it was called at
     * all) is abandoned: go back to the permissions of the last
     * bdrv_set_perm.
     */
    void (*bdrv_abort_perm)(BlockDriverState *bs);

    bool (*bdrv_reopen_prepare)(BlockDriverState *bs, bool read_only,
                                Error **errp);
    void (*bdrv_reopen_commit)(BlockDriverState *bs);
    void (*bdrv_reopen_abort)(BlockDriverState *bs);
    /*
     * After a committed reopen, once the whole graph change (children's
     * permissions and reopens included) is in effect, still drained:
     * for work that needs the new state, such as writing to a child that
     * just became writable.  Cannot fail; report problems.
     */
    void (*bdrv_reopen_commit_post)(BlockDriverState *bs);

    /*
     * A layer above (or the core, for the node's own requests) reached
     * the point named by @event; see bdrv_debug_event().  Only the
     * blkdebug driver listens.
     */
    void (*bdrv_debug_event)(BlockDriverState *bs, BlkdebugEvent event);
};

/* Internal block-status bit: "ask *file at *map instead". */
#define BDRV_BLOCK_RAW 0x100

#endif /* BLOCK_BLOCK_INT_DRIVER_H */
