/*
 * The block graph's internals: nodes (BlockDriverState), edges (BdrvChild)
 * and the functions that open, rewire, reopen and drain them (block.c,
 * graph.c, reopen.c, backing.c, drain.c).  Main loop only.
 */
#ifndef BLOCK_BLOCK_INT_GRAPH_H
#define BLOCK_BLOCK_INT_GRAPH_H

#include "block/block_int-driver.h"
#include "util/hbitmap.h"

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

    /* Dirty bitmaps (BdrvDirtyBitmap *), newest first: dirty-bitmap.c. */
    GList *dirty_bitmaps;
    /*
     * What each write asks of dirty_bitmaps, kept up to date by
     * dirty-bitmap.c whenever a bitmap comes, goes or changes state.
     */
    HBitmap **enabled_bits;         /* of the enabled ones; NULL if none */
    unsigned n_enabled_bits;
    bool has_readonly_bitmaps;

    /* Why the node is busy (a block job uses it), or NULL: op blocker. */
    char *op_blocker;
};

/* block.c */
const BlockDriver *bdrv_find_driver(const char *format_name);
/*
 * Op blockers: a node that a block job uses is busy, and blockdev-del or
 * another job refuses it with QEMU's "Node 'X' is busy: REASON".  A node
 * has at most one blocker (a second job is refused before it blocks).
 */
void bdrv_op_block(BlockDriverState *bs, const char *reason);
void bdrv_op_unblock(BlockDriverState *bs);
bool bdrv_op_is_blocked(BlockDriverState *bs, Error **errp);
void bdrv_register(const BlockDriver *drv);

/*
 * Check a byte-count driver option (QEMU parses these as sizes): a
 * negative @value is refused with QEMU's message, naming @name.
 */
bool bdrv_check_size_option(const char *name, bool has_value, int64_t value,
                            Error **errp);
/*
 * The generic options detect-zeroes and discard of @options, with their
 * defaults; detect-zeroes=unmap needs discard=unmap (QEMU's message).
 */
bool bdrv_parse_zero_options(BlockdevOptions *options,
                             BlockdevDetectZeroesOptions *detect_zeroes,
                             bool *discard_unmap, Error **errp);
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
/*
 * Wait until some in-flight count reaches zero (in a coroutine), or for
 * one main-loop iteration (outside one); callers loop on their condition.
 */
void bdrv_drain_wait_event(void);
/* Raise (lower) @bs's quiesce counter and pass it on to the parents. */
void bdrv_quiesce(BlockDriverState *bs);
void bdrv_unquiesce(BlockDriverState *bs);
/* Quiesce a single parent once more (once less) through @child. */
void bdrv_parent_drained_begin_single(BdrvChild *child);
void bdrv_parent_drained_end_single(BdrvChild *child);
/* Pass on to @child's parent exactly the drained sections of child->bs. */
void bdrv_child_sync_quiesce(BdrvChild *child);

#endif /* BLOCK_BLOCK_INT_GRAPH_H */
