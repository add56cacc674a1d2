/*
 * Graph changes (block/graph.c) and drained sections (block/drain.c).
 *
 * In-test drivers build small graphs: a leaf that stores nothing and can
 * be told to refuse permission checks or to hold requests at a gate, a
 * filter, and a "format" that takes its child exclusively for writing, as
 * qcow2 does.  Changes are checked for their outcome and their message,
 * and for leaving no trace when refused: a snapshot of every edge (where
 * it points, what it takes) and of the drivers' permission calls is taken
 * before and compared after.  A randomised run checks the invariants of
 * the permission system after hundreds of random changes.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "util/main-loop.h"

#define ALL BLK_PERM_ALL
#define READ BLK_PERM_CONSISTENT_READ
#define WRITE BLK_PERM_WRITE
#define UNCHANGED BLK_PERM_WRITE_UNCHANGED

typedef struct LeafState {
    bool refuse;                    /* bdrv_check_perm fails */
    unsigned checks, sets, aborts;
    uint64_t perm, shared;          /* as last set */
    bool gated;                     /* requests wait at the gate */
    CoQueue gate;
    unsigned in_driver;             /* requests inside the driver */
} LeafState;

/*
 * The children the next node opened with test_open() gets: pending_file
 * as "file" (or as "backing" with pending_role BDRV_CHILD_COW), and
 * pending_second, if set, as "target" (a filter) or "backing" (a format).
 */
static const char *pending_file;
static BdrvChildRole pending_role = BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY;
static const char *pending_second;

static int coroutine_fn leaf_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    LeafState *s = bs->opaque;

    co_queue_init(&s->gate);
    bs->total_bytes = 1 << 20;
    return 0;
}

static bool leaf_check_perm(BlockDriverState *bs, uint64_t perm,
                            uint64_t shared, Error **errp)
{
    LeafState *s = bs->opaque;

    s->checks++;
    if (s->refuse) {
        error_setg(errp, "leaf '%s' refuses", bs->node_name);
        return false;
    }
    return true;
}

static void leaf_set_perm(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared)
{
    LeafState *s = bs->opaque;

    s->sets++;
    s->perm = perm;
    s->shared = shared;
}

static void leaf_abort_perm(BlockDriverState *bs)
{
    LeafState *s = bs->opaque;

    s->aborts++;
}

static int coroutine_fn leaf_co_preadv(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    LeafState *s = bs->opaque;

    s->in_driver++;
    while (s->gated) {
        co_queue_wait(&s->gate);
    }
    s->in_driver--;
    iovector_memset(qiov, 0, 0, bytes);
    return 0;
}

static const BlockDriver bdrv_test_leaf = {
    .format_name = "test-leaf",
    .instance_size = sizeof(LeafState),
    .bdrv_open = leaf_open,
    .bdrv_co_preadv = leaf_co_preadv,
    .bdrv_check_perm = leaf_check_perm,
    .bdrv_set_perm = leaf_set_perm,
    .bdrv_abort_perm = leaf_abort_perm,
};

static int coroutine_fn child_open(BlockDriverState *bs,
                                   BlockdevOptions *options, Error **errp)
{
    BlockdevRef ref = { .type = QTYPE_QSTRING };

    ref.u.reference = (char *)pending_file;
    if (!bdrv_open_child(bs, &ref, pending_role & BDRV_CHILD_COW ? "backing"
                                                                 : "file",
                         pending_role, errp)) {
        return -EINVAL;
    }
    if (pending_second) {
        ref.u.reference = (char *)pending_second;
        if (!bdrv_open_child(bs, &ref, bs->drv->is_filter ? "target"
                                                          : "backing",
                             bs->drv->is_filter ? BDRV_CHILD_DATA
                                                : BDRV_CHILD_COW, errp)) {
            return -EINVAL;
        }
    }
    bs->total_bytes = bdrv_getlength(bs->file ? bs->file->bs
                                              : bs->backing->bs);
    return 0;
}

static int coroutine_fn filter_co_preadv(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes,
                                         IOVector *qiov,
                                         BdrvRequestFlags flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static const BlockDriver bdrv_test_filter = {
    .format_name = "test-filter",
    .is_filter = true,
    .bdrv_open = child_open,
    .bdrv_co_preadv = filter_co_preadv,
};

/* Like qcow2: writes its file whenever writable, shares no other writer. */
static void format_child_perm(BlockDriverState *bs, BdrvChild *child,
                              uint64_t parent_perm, uint64_t parent_shared,
                              uint64_t *nperm, uint64_t *nshared)
{
    if (child->role & BDRV_CHILD_COW) {
        *nperm = READ;
        *nshared = ALL;
        return;
    }
    *nperm = READ | (bs->read_only ? 0 : WRITE);
    *nshared = READ | UNCHANGED;
}

static const BlockDriver bdrv_test_format = {
    .format_name = "test-format",
    .bdrv_open = child_open,
    .bdrv_co_preadv = filter_co_preadv,
    .bdrv_child_perm = format_child_perm,
};

typedef struct OpenArgs {
    const BlockDriver *drv;
    const char *name;
    BlockDriverState *bs;
} OpenArgs;

static void coroutine_fn open_entry(void *opaque)
{
    OpenArgs *a = opaque;

    a->bs = bdrv_new_open_driver(a->drv, a->name, false, &error_abort);
}

static BlockDriverState *test_open(const BlockDriver *drv, const char *name,
                                   const char *file)
{
    OpenArgs a = { .drv = drv, .name = name };

    pending_file = file;
    co_run_sync(open_entry, &a);
    pending_role = BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY;
    pending_second = NULL;
    return a.bs;
}

static LeafState *leaf(BlockDriverState *bs)
{
    g_assert(bs->drv == &bdrv_test_leaf);
    return bs->opaque;
}

static BlockBackend *backend(BlockDriverState *bs, const char *user,
                             uint64_t perm, uint64_t shared)
{
    return blk_new_with_bs(bs, user, perm, shared, &error_abort);
}

/* --- snapshots: a refused change must leave no trace --- */

static void snapshot_node(GString *out, BlockDriverState *bs)
{
    g_string_append_printf(out, "%s(ref %d):", bs->node_name, bs->refcnt);
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *c = l->data;

        g_string_append_printf(out, " %s/%p %" PRIx64 "/%" PRIx64, c->name,
                               c->opaque, c->perm, c->shared_perm);
    }
    if (bs->drv == &bdrv_test_leaf) {
        LeafState *s = bs->opaque;

        g_string_append_printf(out, " set %u %" PRIx64 "/%" PRIx64,
                               s->sets, s->perm, s->shared);
    }
    g_string_append_c(out, '\n');
}

static char *snapshot(void)
{
    GString *out = g_string_new(NULL);

    for (GList *l = bdrv_all_nodes(); l; l = l->next) {
        snapshot_node(out, l->data);
    }
    return g_string_free(out, FALSE);
}

static void assert_error(Error **err, const char *msg)
{
    g_assert_nonnull(*err);
    g_assert_cmpstr(error_get_pretty(*err), ==, msg);
    error_free(*err);
    *err = NULL;
}

/* --- inserting and dropping a filter --- */

static void test_insert_drop_filter(void)
{
    BlockDriverState *disk = test_open(&bdrv_test_leaf, "disk", NULL);
    BlockBackend *exp = backend(disk, "NBD export 'e'", READ | WRITE, ALL);
    BlockDriverState *filter = test_open(&bdrv_test_filter, "cbw", "disk");

    /* The filter goes in between: the export now writes through it. */
    g_assert_true(bdrv_replace_node(disk, filter, &error_abort));
    g_assert(blk_bs(exp) == filter);
    g_assert_cmpuint(g_list_length(disk->parents), ==, 1);
    g_assert(((BdrvChild *)disk->parents->data)->parent_bs == filter);
    g_assert_cmphex(leaf(disk)->perm, ==, READ | WRITE);

    /* And out again; the filter keeps its own child until it closes. */
    g_assert_true(bdrv_drop_filter(filter, &error_abort));
    g_assert(blk_bs(exp) == disk);
    g_assert_cmpuint(g_list_length(filter->parents), ==, 0);
    bdrv_unref(filter);
    g_assert_cmpuint(g_list_length(disk->parents), ==, 1);
    g_assert_cmphex(leaf(disk)->perm, ==, READ | WRITE);
    blk_unref(exp);
    g_assert_cmphex(leaf(disk)->perm, ==, 0);
    bdrv_unref(disk);
}

/* A backend that allows no writer refuses the filter's move, unchanged. */
static void test_conflict_rolls_back(void)
{
    Error *err = NULL;
    BlockDriverState *a = test_open(&bdrv_test_leaf, "a", NULL);
    BlockDriverState *b = test_open(&bdrv_test_leaf, "b", NULL);
    BlockBackend *writer = backend(a, "NBD export 'w'", READ | WRITE, ALL);
    BlockBackend *reader = backend(b, "NBD export 'r'", READ, READ);
    g_autofree char *before = snapshot();
    g_autofree char *after = NULL;

    g_assert_false(bdrv_replace_node(a, b, &err));
    assert_error(&err, "Permission conflict on node 'b': permissions 'write' "
                 "are both required by NBD export 'w' (uses node 'b' as "
                 "'root' child) and unshared by NBD export 'r' (uses node "
                 "'b' as 'root' child).");
    after = snapshot();
    g_assert_cmpstr(before, ==, after);
    g_assert(blk_bs(writer) == a);
    blk_unref(writer);
    blk_unref(reader);
    bdrv_unref(a);
    bdrv_unref(b);
}

/*
 * The fleecing diamond: a copy-before-write filter reads its file, the
 * source, and writes its target, whose backing is the same source.  The
 * source is checked once, after both of its parents.
 */
static void test_diamond(void)
{
    Error *err = NULL;
    BlockDriverState *src = test_open(&bdrv_test_leaf, "src", NULL);
    BlockDriverState *tfile = test_open(&bdrv_test_leaf, "tfile", NULL);
    BlockDriverState *tgt, *cbw;
    BlockBackend *exp, *reader;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    unsigned tfile_aborts;

    pending_second = "src";
    tgt = test_open(&bdrv_test_format, "tgt", "tfile");
    pending_second = "tgt";
    cbw = test_open(&bdrv_test_filter, "cbw", "src");
    g_assert(tgt->backing->bs == src && cbw->file->bs == src);

    /* The target's backing edge reads and shares all: the export writes. */
    exp = backend(cbw, "NBD export 'e'", READ | WRITE, ALL);
    g_assert_cmphex(leaf(src)->perm, ==, READ | WRITE);
    g_assert_cmphex(leaf(tfile)->perm, ==, READ | WRITE);
    blk_unref(exp);

    /*
     * With a reader on the source that allows no writer, the same export
     * is refused at the bottom of the diamond; the target's file, which
     * the check passed first, is rolled back too.
     */
    reader = backend(src, "NBD export 'r'", READ, READ);
    before = snapshot();
    tfile_aborts = leaf(tfile)->aborts;
    g_assert_null(blk_new_with_bs(cbw, "NBD export 'e'", READ | WRITE, ALL,
                                  &err));
    assert_error(&err, "Permission conflict on node 'src': permissions "
                 "'write' are both required by node 'cbw' (uses node 'src' "
                 "as 'file' child) and unshared by NBD export 'r' (uses node "
                 "'src' as 'root' child).");
    after = snapshot();
    g_assert_cmpstr(before, ==, after);
    g_assert_cmpuint(leaf(tfile)->aborts, ==, tfile_aborts + 1);

    blk_unref(reader);
    bdrv_unref(cbw);
    bdrv_unref(tgt);
    bdrv_unref(tfile);
    bdrv_unref(src);
}

/* A second writer on a node a format writes is refused whole. */
static void test_second_writer_refused(void)
{
    Error *err = NULL;
    BlockDriverState *src = test_open(&bdrv_test_leaf, "src", NULL);
    BlockDriverState *other = test_open(&bdrv_test_leaf, "other", NULL);
    BlockDriverState *fmt = test_open(&bdrv_test_format, "fmt", "other");
    BlockDriverState *filter = test_open(&bdrv_test_filter, "cbw", "src");
    BlockBackend *exp = backend(filter, "NBD export 'e'", READ | WRITE, ALL);
    g_autofree char *before = snapshot();
    g_autofree char *after = NULL;

    g_assert_false(bdrv_replace_child(fmt->file, src, &err));
    assert_error(&err, "Permission conflict on node 'src': permissions "
                 "'write' are both required by node 'cbw' (uses node 'src' "
                 "as 'file' child) and unshared by node 'fmt' (uses node "
                 "'src' as 'file' child).");
    after = snapshot();
    g_assert_cmpstr(before, ==, after);

    blk_unref(exp);
    bdrv_unref(filter);
    bdrv_unref(fmt);
    bdrv_unref(other);
    bdrv_unref(src);
}

/* A driver's refusal deep down undoes every reservation made above it. */
static void test_driver_refusal_aborts(void)
{
    Error *err = NULL;
    BlockDriverState *a = test_open(&bdrv_test_leaf, "a", NULL);
    BlockDriverState *b = test_open(&bdrv_test_leaf, "b", NULL);
    BlockDriverState *filter = test_open(&bdrv_test_filter, "f", "a");
    BlockBackend *exp = backend(filter, "NBD export 'e'", READ | WRITE, ALL);
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    unsigned aborts_before = leaf(b)->aborts;

    leaf(b)->refuse = true;
    before = snapshot();
    g_assert_false(bdrv_replace_child(filter->file, b, &err));
    assert_error(&err, "leaf 'b' refuses");
    after = snapshot();
    g_assert_cmpstr(before, ==, after);
    g_assert_cmpuint(leaf(b)->aborts, ==, aborts_before + 1);
    g_assert(filter->file->bs == a);

    leaf(b)->refuse = false;
    g_assert_true(bdrv_replace_child(filter->file, b, &error_abort));
    g_assert_cmphex(leaf(b)->perm, ==, READ | WRITE);
    g_assert_cmphex(leaf(a)->perm, ==, 0);
    blk_unref(exp);
    bdrv_unref(filter);
    bdrv_unref(a);
    bdrv_unref(b);
}

static void test_cycle_refused(void)
{
    Error *err = NULL;
    BlockDriverState *a = test_open(&bdrv_test_leaf, "a", NULL);
    BlockDriverState *f1 = test_open(&bdrv_test_filter, "f1", "a");
    BlockDriverState *f2 = test_open(&bdrv_test_filter, "f2", "f1");

    g_assert_false(bdrv_replace_child(f1->file, f2, &err));
    assert_error(&err, "Making 'f2' a file child of 'f1' would create a "
                 "cycle");
    g_assert(f1->file->bs == a);
    bdrv_unref(f2);
    bdrv_unref(f1);
    bdrv_unref(a);
}

/* Generic code finds the backing child through its role; chains walk. */
static void test_backing_chain(void)
{
    BlockDriverState *base = test_open(&bdrv_test_leaf, "base", NULL);
    BlockDriverState *mid, *top;

    pending_role = BDRV_CHILD_COW;
    mid = test_open(&bdrv_test_format, "mid", "base");
    pending_role = BDRV_CHILD_COW;
    top = test_open(&bdrv_test_format, "top", "mid");
    g_assert(top->backing->bs == mid && mid->backing->bs == base);
    g_assert_null(top->file);
    g_assert_cmpint(bdrv_backing_file_depth(top), ==, 2);
    g_assert_cmpint(bdrv_backing_file_depth(mid), ==, 1);
    g_assert_cmpint(bdrv_backing_file_depth(base), ==, 0);
    bdrv_unref(top);
    bdrv_unref(mid);
    bdrv_unref(base);
}

/* --- drain --- */

typedef struct ReadOp {
    BlockBackend *blk;
    bool started, done;
    int ret;
} ReadOp;

static void coroutine_fn read_entry(void *opaque)
{
    ReadOp *op = opaque;
    uint8_t buf[512];

    op->started = true;
    op->ret = blk_co_pread(op->blk, 0, sizeof(buf), buf, 0);
    op->done = true;
}

static void start_read(ReadOp *op, BlockBackend *blk)
{
    *op = (ReadOp) { .blk = blk };
    coroutine_enter(coroutine_create(read_entry, op));
}

typedef struct DrainOp {
    BlockDriverState *bs;
    bool drained;
} DrainOp;

static void coroutine_fn drain_entry(void *opaque)
{
    DrainOp *op = opaque;

    bdrv_drained_begin(op->bs);
    op->drained = true;
}

static void run_until(bool *flag)
{
    for (int i = 0; i < 1000 && !*flag; i++) {
        main_loop_wait(false);
    }
    g_assert_true(*flag);
}

static void run_a_while(void)
{
    for (int i = 0; i < 20; i++) {
        main_loop_wait(false);
    }
}

/*
 * Draining the leaf under a filter quiesces the export above: the request
 * in flight finishes, a new one waits until the section ends.
 */
static void test_drain_holds_new_requests(void)
{
    BlockDriverState *disk = test_open(&bdrv_test_leaf, "disk", NULL);
    BlockDriverState *filter = test_open(&bdrv_test_filter, "f", "disk");
    BlockBackend *exp = backend(filter, "NBD export 'e'", READ, ALL);
    DrainOp drain = { .bs = disk };
    ReadOp in_flight, late;

    leaf(disk)->gated = true;
    start_read(&in_flight, exp);
    g_assert_cmpuint(leaf(disk)->in_driver, ==, 1);

    coroutine_enter(coroutine_create(drain_entry, &drain));
    run_a_while();
    g_assert_false(drain.drained);          /* waits for the request */
    g_assert_cmpuint(filter->quiesce_counter, ==, 1);

    leaf(disk)->gated = false;
    co_queue_restart_all(&leaf(disk)->gate);
    run_until(&drain.drained);
    g_assert_true(in_flight.done);
    g_assert_cmpint(in_flight.ret, ==, 0);

    start_read(&late, exp);
    run_a_while();
    g_assert_true(late.started);
    g_assert_false(late.done);              /* held in the backend */
    g_assert_cmpuint(leaf(disk)->in_driver, ==, 0);

    bdrv_drained_end(disk);
    g_assert_cmpuint(filter->quiesce_counter, ==, 0);
    run_until(&late.done);
    g_assert_cmpint(late.ret, ==, 0);

    blk_unref(exp);
    bdrv_unref(filter);
    bdrv_unref(disk);
}

/* A backend moved off a drained node is released; one moved on is held. */
static void test_drain_follows_moved_edges(void)
{
    BlockDriverState *a = test_open(&bdrv_test_leaf, "a", NULL);
    BlockDriverState *b = test_open(&bdrv_test_leaf, "b", NULL);
    BlockDriverState *filter = test_open(&bdrv_test_filter, "f", "a");
    BlockBackend *exp = backend(filter, "NBD export 'e'", READ, ALL);
    ReadOp op;

    bdrv_drained_begin(a);
    g_assert_cmpuint(filter->quiesce_counter, ==, 1);
    g_assert_true(bdrv_replace_child(filter->file, b, &error_abort));
    g_assert_cmpuint(filter->quiesce_counter, ==, 0);
    start_read(&op, exp);
    run_until(&op.done);

    g_assert_true(bdrv_replace_child(filter->file, a, &error_abort));
    g_assert_cmpuint(filter->quiesce_counter, ==, 1);
    start_read(&op, exp);
    run_a_while();
    g_assert_false(op.done);
    bdrv_drained_end(a);
    run_until(&op.done);

    blk_unref(exp);
    bdrv_unref(filter);
    bdrv_unref(a);
    bdrv_unref(b);
}

/* --- randomised: invariants hold after any sequence of changes --- */

enum { NODES = 6, BACKENDS = 4 };

static uint64_t random_perm(GRand *r)
{
    return g_rand_int_range(r, 0, 16) & ALL;
}

/* Parents of every node agree, and every stored permission is current. */
static void check_invariants(BlockDriverState **nodes, int n)
{
    for (int i = 0; i < n; i++) {
        BlockDriverState *bs = nodes[i];

        for (GList *l = bs->parents; l; l = l->next) {
            BdrvChild *a = l->data;

            for (GList *m = bs->parents; m; m = m->next) {
                BdrvChild *b = m->data;

                if (a != b) {
                    g_assert_cmphex(a->perm & ~b->shared_perm, ==, 0);
                }
            }
        }
        for (GList *l = bs->children; l; l = l->next) {
            BdrvChild *c = l->data;
            uint64_t cum = 0, shared = ALL;

            for (GList *m = bs->parents; m; m = m->next) {
                cum |= ((BdrvChild *)m->data)->perm;
                shared &= ((BdrvChild *)m->data)->shared_perm;
            }
            /* Filters pass through; the format derives its own. */
            if (bs->drv == &bdrv_test_filter) {
                g_assert_cmphex(c->perm, ==, cum);
                g_assert_cmphex(c->shared_perm, ==, shared);
            }
        }
    }
}

static void test_random_changes(void)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(20261206);
    BlockDriverState *nodes[NODES];
    BlockBackend *blks[BACKENDS] = { NULL };
    unsigned refused = 0, done = 0;

    nodes[0] = test_open(&bdrv_test_leaf, "l0", NULL);
    nodes[1] = test_open(&bdrv_test_leaf, "l1", NULL);
    nodes[2] = test_open(&bdrv_test_filter, "f2", "l0");
    nodes[3] = test_open(&bdrv_test_filter, "f3", "l1");
    nodes[4] = test_open(&bdrv_test_filter, "f4", "f2");
    nodes[5] = test_open(&bdrv_test_format, "q5", "l1");

    for (int round = 0; round < 400; round++) {
        int b = g_rand_int_range(r, 0, BACKENDS);
        BlockDriverState *target = nodes[g_rand_int_range(r, 0, NODES)];
        Error *err = NULL;
        g_autofree char *before = snapshot();
        bool ok = true;

        switch (g_rand_int_range(r, 0, 4)) {
        case 0:     /* attach or detach a backend */
            if (blks[b]) {
                blk_unref(blks[b]);
                blks[b] = NULL;
                break;
            }
            blks[b] = blk_new_with_bs(target, "NBD export 'x'",
                                      random_perm(r), random_perm(r), &err);
            ok = blks[b] != NULL;
            break;
        case 1:     /* move a filter's child */
        {
            BlockDriverState *f = nodes[g_rand_int_range(r, 2, 5)];

            ok = bdrv_replace_child(f->file, target, &err);
            break;
        }
        case 2:     /* move a backend */
            if (blks[b]) {
                ok = bdrv_replace_node(blk_bs(blks[b]), target, &err);
            }
            break;
        default:    /* a leaf refuses for a while */
            leaf(nodes[g_rand_int_range(r, 0, 2)])->refuse ^= true;
            break;
        }
        if (!ok) {
            g_autofree char *after = snapshot();

            g_assert_nonnull(err);
            error_free(err);
            g_assert_cmpstr(before, ==, after);
            refused++;
        } else {
            done++;
        }
        check_invariants(nodes, NODES);
    }
    /* Both outcomes were exercised. */
    g_assert_cmpuint(refused, >, 20);
    g_assert_cmpuint(done, >, 20);

    for (int b = 0; b < BACKENDS; b++) {
        blk_unref(blks[b]);
    }
    for (int i = NODES; i-- > 0;) {
        bdrv_unref(nodes[i]);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/graph/insert-drop-filter", test_insert_drop_filter);
    g_test_add_func("/graph/conflict-rolls-back", test_conflict_rolls_back);
    g_test_add_func("/graph/diamond", test_diamond);
    g_test_add_func("/graph/second-writer-refused",
                    test_second_writer_refused);
    g_test_add_func("/graph/driver-refusal-aborts",
                    test_driver_refusal_aborts);
    g_test_add_func("/graph/cycle-refused", test_cycle_refused);
    g_test_add_func("/graph/backing-chain", test_backing_chain);
    g_test_add_func("/graph/random-changes", test_random_changes);
    g_test_add_func("/drain/holds-new-requests",
                    test_drain_holds_new_requests);
    g_test_add_func("/drain/follows-moved-edges",
                    test_drain_follows_moved_edges);
    return g_test_run();
}
