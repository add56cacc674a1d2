/*
 * The inside of the block layer: the driver interface and the node and
 * child structures.  Only block/ and its drivers include this.
 *
 * Contract between core and drivers (see block/io.c): every request a
 * driver sees has been checked by the core.  Offsets and lengths are
 * within the node, aligned to bs->bl.request_alignment, no longer than
 * bs->bl.max_transfer, buffers are aligned to bs->bl.min_mem_alignment,
 * and flags are a subset of what the driver declared it supports.
 * Drivers return 0 (or a status) or -errno, and never allocate an Error
 * on the data path.
 */
#ifndef BLOCK_BLOCK_INT_H
#define BLOCK_BLOCK_INT_H

#include "block/block.h"
#include "qapi/qapi-types.h"
#include "util/coroutine.h"

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

struct BlockDriver {
    const char *format_name;
    size_t instance_size;
    /* A filter passes data through to its one primary child. */
    bool is_filter;
    /*
     * The node grows when written past its end (a regular file): a
     * parent holding BLK_PERM_RESIZE may write there, and the core then
     * extends total_bytes.  Format drivers allocate clusters this way.
     */
    bool has_variable_length;
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

    int coroutine_fn (*bdrv_co_pread)(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, void *buf,
                                      BdrvRequestFlags flags);
    int coroutine_fn (*bdrv_co_pwrite)(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, const void *buf,
                                       BdrvRequestFlags flags);
    /* May return -ENOTSUP: the core then writes a zeroed buffer. */
    int coroutine_fn (*bdrv_co_pwrite_zeroes)(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags);
    int coroutine_fn (*bdrv_co_pdiscard)(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes);
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
     * holds a conflicting image lock).
     */
    bool (*bdrv_check_perm)(BlockDriverState *bs, uint64_t perm,
                            uint64_t shared, Error **errp);
    /* The parents' permissions changed to @perm/@shared (or relaxed). */
    void (*bdrv_set_perm)(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared);

    /*
     * A layer above (or the core, for the node's own requests) reached
     * the point named by @event; see bdrv_debug_event().  Only the
     * blkdebug driver listens.
     */
    void (*bdrv_debug_event)(BlockDriverState *bs, BlkdebugEvent event);
};

/* Internal block-status bit: "ask *file at *map instead". */
#define BDRV_BLOCK_RAW 0x100

/*
 * Who a BdrvChild belongs to: another node, or a BlockBackend.  Used to
 * name the parent in permission-conflict messages.
 */
typedef struct BdrvChildClass {
    char *(*get_parent_desc)(BdrvChild *child);
} BdrvChildClass;

struct BdrvChild {
    BlockDriverState *bs;           /* the child node */
    char *name;                     /* "file", "backing", "root" */
    BdrvChildRole role;
    uint64_t perm;
    uint64_t shared_perm;
    const BdrvChildClass *klass;
    void *opaque;                   /* the parent */
    BlockDriverState *parent_bs;    /* NULL unless the parent is a node */
};

/* A request in flight on a node, for serialisation. */
typedef struct BdrvTrackedRequest {
    int64_t offset;                 /* aligned range it may touch */
    int64_t bytes;
    bool serialising;               /* read-modify-write: exclusive */
    bool is_write;
    CoQueue waiters;                /* requests waiting for this one */
    GList link;                     /* in bs->tracked_requests */
} BdrvTrackedRequest;

struct BlockDriverState {
    /* Set at open and never changed afterwards. */
    char *node_name;
    const BlockDriver *drv;
    void *opaque;                   /* drv->instance_size bytes */
    char *filename;                 /* for queries and messages */
    bool read_only;
    bool discard_unmap;             /* discard=unmap */
    BlockdevDetectZeroesOptions detect_zeroes;
    bool cache_direct;
    bool cache_no_flush;
    BlockLimits bl;
    BdrvChild *file;                /* primary child, or NULL */
    BdrvChild *backing;             /* the BDRV_CHILD_COW child, or NULL */
    /* The backing file as the image header records it (block/backing.c). */
    char *backing_file;             /* name, or NULL */
    char *backing_format;           /* format name, or NULL */

    /* Changed by the driver (resize). */
    int64_t total_bytes;

    /* Graph state: main loop only. */
    int refcnt;
    GList *children;                /* BdrvChild * we hold */
    GList *parents;                 /* BdrvChild * pointing at us */

    /* Requests in flight. */
    unsigned in_flight;
    GQueue tracked_requests;        /* BdrvTrackedRequest * */
    unsigned serialising_in_flight;
    CoQueue drain_waiters;          /* woken when in_flight drops to 0 */
};

/* block.c */
const BlockDriver *bdrv_find_driver(const char *format_name);
void bdrv_register(const BlockDriver *drv);
/* The format whose driver probes @buf best ("raw" if none claims it). */
const char *bdrv_probe_format(const uint8_t *buf, int buf_size);

/*
 * Open a new node from @options (blockdev-add, the command line, or a
 * nested definition).  Returns it with one reference.
 */
BlockDriverState *coroutine_fn bdrv_open_blockdev(BlockdevOptions *options,
                                                  bool inherit_read_only,
                                                  Error **errp);
/*
 * Open a node of a driver that has no QAPI options (test drivers): its
 * bdrv_open is called with NULL options.
 */
BlockDriverState *coroutine_fn bdrv_new_open_driver(const BlockDriver *drv,
                                                    const char *node_name,
                                                    bool discard_unmap,
                                                    Error **errp);
/*
 * Open or look up the child of @parent described by @ref and attach it
 * under @name with @role.
 */
BdrvChild *coroutine_fn bdrv_open_child(BlockDriverState *parent,
                                        BlockdevRef *ref, const char *name,
                                        BdrvChildRole role, Error **errp);
/* Attach @child_bs to a parent, checking permissions; takes a reference. */
BdrvChild *bdrv_attach_child(BlockDriverState *child_bs, const char *name,
                             BdrvChildRole role,
                             const BdrvChildClass *klass, void *opaque,
                             BlockDriverState *parent_bs,
                             uint64_t perm, uint64_t shared_perm,
                             Error **errp);
void bdrv_detach_child(BdrvChild *child);
/* Change what @child takes and shares, if no other parent objects. */
bool bdrv_child_set_perm(BdrvChild *child, uint64_t perm, uint64_t shared,
                         Error **errp);
/* Iterate over all nodes (in creation order). */
GList *bdrv_all_nodes(void);
/* The driver's image facts, zeroed first; -ENOTSUP if it has none. */
int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);

/* backing.c */
/*
 * Open the backing child of @bs, just opened by its driver, from the
 * "backing" option in @options or else from bs->backing_file.
 */
bool coroutine_fn bdrv_open_backing(BlockDriverState *bs,
                                    BlockdevOptions *options, Error **errp);
/* bs->backing_file resolved against the image's directory, or NULL. */
char *bdrv_full_backing_filename(BlockDriverState *bs);
/* The number of backing nodes below @bs. */
int bdrv_backing_file_depth(BlockDriverState *bs);

/* io.c: entry points used by parents (nodes or backends). */
int coroutine_fn bdrv_co_pread(BdrvChild *child, int64_t offset,
                               int64_t bytes, void *buf,
                               BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwrite(BdrvChild *child, int64_t offset,
                                int64_t bytes, const void *buf,
                                BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset,
                                       int64_t bytes, BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset,
                                  int64_t bytes);
int coroutine_fn bdrv_co_flush(BlockDriverState *bs);
int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum);
/*
 * bdrv_co_block_status_above:
 * Walk the backing chain from @bs down to, not including, @base (NULL:
 * the whole chain) for the first layer that allocates [@offset, +@bytes).
 * Returns its BDRV_BLOCK_* status for the first *@pnum bytes, and in
 * *@depth that layer's place in the chain (1: @bs itself), or 0 if no
 * layer above @base allocates them ("allocated above @base" is
 * *@depth > 0).  qemu:allocation-depth reports *@depth.
 */
int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs,
                                            BlockDriverState *base,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int *depth);
/* Iterate the main loop until @bs has no request in flight. */
void bdrv_drain(BlockDriverState *bs);

/*
 * bdrv_debug_event:
 * Tell @bs that @event happened, for fault injection in tests: a
 * blkdebug node reacts by activating the error rules or changing to the
 * state that its options tie to @event.  Nodes of other drivers ignore
 * events, so the calls cost one test when no blkdebug node is present.
 * Format drivers raise events on the child that holds their metadata
 * and data, through BLKDBG_EVENT(); the core raises the pwritev* events
 * on the node written and the flush_* events on the primary child of
 * the node flushed.  The event itself never fails: a rule it activates
 * makes the following requests on the blkdebug node fail.
 */
void bdrv_debug_event(BlockDriverState *bs, BlkdebugEvent event);
#define BLKDBG_EVENT(child, evt) \
    do { \
        if (child) { \
            bdrv_debug_event((child)->bs, (evt)); \
        } \
    } while (0)

#endif /* BLOCK_BLOCK_INT_H */
