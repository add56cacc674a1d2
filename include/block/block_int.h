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
     * blockdev-reopen may switch read-only on and off: the driver keeps
     * nothing that depends on it (an fd's open mode, on-disk flags).
     */
    bool can_reopen_read_only;
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
};

/* Internal block-status bit: "ask *file at *map instead". */
#define BDRV_BLOCK_RAW 0x100

/*
 * Who a BdrvChild belongs to: another node, or a BlockBackend.  Used to
 * name the parent in permission-conflict messages.
 */
typedef struct BdrvChildClass {
    char *(*get_parent_desc)(BdrvChild *child);
    /*
     * The child node entered (left) a drained section: quiesce (release)
     * the parent.  drained_poll: does the parent still have requests in
     * flight, or is it still about to issue some?
     */
    void (*drained_begin)(BdrvChild *child);
    void (*drained_end)(BdrvChild *child);
    bool (*drained_poll)(BdrvChild *child);
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
    /* Drained sections of bs passed on to the parent (drain.c). */
    unsigned parent_quiesce;
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
    bool filename_from_file;        /* follows bs->file's filename */
    json_object *options;           /* as opened (blockdev-reopen) */
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
    unsigned quiesce_counter;       /* drained sections on this node */
};

/* block.c */
const BlockDriver *bdrv_find_driver(const char *format_name);
void bdrv_register(const BlockDriver *drv);

/*
 * Check a byte-count driver option (QEMU parses these as sizes): a
 * negative @value is refused with QEMU's message, naming @name.
 */
bool bdrv_check_size_option(const char *name, bool has_value, int64_t value,
                            Error **errp);
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

/*
 * Graph changes (graph.c).  Each is checked as a whole over the changed
 * graph and either applied entirely or not at all: on failure the graph,
 * its permissions and the image locks are as they were.  Each runs in a
 * drained section over the nodes concerned (callable from a coroutine).
 */
/* Point @child at @new_bs. */
bool bdrv_replace_child(BdrvChild *child, BlockDriverState *new_bs,
                        Error **errp);
/*
 * Move every parent edge of @from (nodes, exports, jobs) to @to, except
 * @to's own edges: so a filter opened above @from is inserted with
 * bdrv_replace_node(@from, filter) (QEMU's bdrv_append).
 */
bool bdrv_replace_node(BlockDriverState *from, BlockDriverState *to,
                       Error **errp);
/*
 * What blockdev-reopen changes on one node: read-only, its file child
 * (NULL: unchanged), its backing child (if @set_backing; NULL: none), and
 * the generic options detect-zeroes and discard.
 */
typedef struct BdrvReopenChange {
    BlockDriverState *bs;
    bool read_only;
    BlockDriverState *file;
    bool set_backing;
    BlockDriverState *backing;
    BlockdevDetectZeroesOptions detect_zeroes;
    bool discard_unmap;
} BdrvReopenChange;

/* May @bs become read-only?  Not while a parent writes through it. */
bool bdrv_can_set_read_only(BlockDriverState *bs, Error **errp);
/* Apply all @n changes as one graph change, or none. */
bool bdrv_reopen_multiple(BdrvReopenChange *changes, size_t n, Error **errp);

/* The node a filter passes data to, or NULL if @bs is no filter. */
BlockDriverState *bdrv_filtered_bs(BlockDriverState *bs);
/*
 * Move every parent edge of filter @bs to the node below it (QEMU's
 * bdrv_drop_filter); @bs keeps its own child until it is closed.
 */
bool bdrv_drop_filter(BlockDriverState *bs, Error **errp);
/* Iterate over all nodes (in creation order). */
GList *bdrv_all_nodes(void);
/* The driver's image facts, zeroed first; -ENOTSUP if it has none. */
int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);

/* The class of edges whose parent is a node (block.c). */
extern const BdrvChildClass child_of_bds;

/* reopen.c: @options as JSON, through the generated visitor. */
json_object *bdrv_options_to_json(BlockdevOptions *options);

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
/* drain.c: see there for the rules. */
/*
 * bdrv_drained_begin:
 * Quiesce @bs and every parent above it, then wait (from a coroutine or
 * not) until nothing is in flight there.  Until bdrv_drained_end(), no
 * new external request reaches @bs.  Sections nest.
 */
void bdrv_drained_begin(BlockDriverState *bs);
void bdrv_drained_end(BlockDriverState *bs);
/* One drained section over @n nodes: all are quiesced before the wait. */
void bdrv_drained_begin_nodes(BlockDriverState *const *nodes, size_t n);
void bdrv_drained_end_nodes(BlockDriverState *const *nodes, size_t n);
/* Wait until @bs and its parents have no request in flight. */
void bdrv_drain(BlockDriverState *bs);
/* Is anything in flight on @bs or above it? */
bool bdrv_drain_poll(BlockDriverState *bs);
/* An in-flight count reached zero: let waiting drains look again. */
void bdrv_wake_drainers(void);
/* Raise (lower) @bs's quiesce counter and pass it on to the parents. */
void bdrv_quiesce(BlockDriverState *bs);
void bdrv_unquiesce(BlockDriverState *bs);
/* Quiesce a single parent once more (once less) through @child. */
void bdrv_parent_drained_begin_single(BdrvChild *child);
void bdrv_parent_drained_end_single(BdrvChild *child);
/* Pass on to @child's parent exactly the drained sections of child->bs. */
void bdrv_child_sync_quiesce(BdrvChild *child);

#endif /* BLOCK_BLOCK_INT_H */
