/*
 * Permission updates in the block graph (block/block.c) as drivers see
 * them: check, then set or abort.
 *
 * In-test leaf drivers reserve what a check approves, the way the file
 * driver takes its image locks, and record what is reserved and what was
 * last set.  A parent node passes its parents' permissions to two such
 * leaves; when the second refuses, the reservation of the first must be
 * undone, so that a refused user leaves every node as it was.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "util/main-loop.h"

#define WRITER_PERM (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)

typedef struct LeafState {
    bool refuse;            /* the next checks fail */
    uint64_t reserved;      /* permissions approved and not released */
    uint64_t set;           /* permissions of the last set */
} LeafState;

static int coroutine_fn leaf_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    bs->total_bytes = 4096;
    return 0;
}

static bool leaf_check_perm(BlockDriverState *bs, uint64_t perm,
                            uint64_t shared, Error **errp)
{
    LeafState *s = bs->opaque;

    if (s->refuse) {
        error_setg(errp, "%s refuses", bs->node_name);
        return false;
    }
    s->reserved |= perm;
    return true;
}

static void leaf_set_perm(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared)
{
    LeafState *s = bs->opaque;

    s->reserved = s->set = perm;
}

static void leaf_abort_perm(BlockDriverState *bs)
{
    LeafState *s = bs->opaque;

    s->reserved = s->set;
}

static const BlockDriver bdrv_test_leaf = {
    .format_name = "test-leaf",
    .instance_size = sizeof(LeafState),
    .bdrv_open = leaf_open,
    .bdrv_check_perm = leaf_check_perm,
    .bdrv_set_perm = leaf_set_perm,
    .bdrv_abort_perm = leaf_abort_perm,
};

/* Two children, which get what the node's parents take (pass-through). */
static const BlockDriver bdrv_test_pair = {
    .format_name = "test-pair",
    .bdrv_open = leaf_open,
};

static char *pair_child_desc(BdrvChild *child)
{
    return g_strdup("node 'pair'");
}

static const BdrvChildClass pair_child = {
    .get_parent_desc = pair_child_desc,
};

typedef struct Fixture {
    BlockDriverState *pair;
    BlockDriverState *leaf[2];
    BdrvChild *child[2];
} Fixture;

static void coroutine_fn open_entry(void *opaque)
{
    Fixture *f = opaque;

    f->pair = bdrv_new_open_driver(&bdrv_test_pair, "pair", false,
                                   &error_abort);
    f->leaf[0] = bdrv_new_open_driver(&bdrv_test_leaf, "leaf0", false,
                                      &error_abort);
    f->leaf[1] = bdrv_new_open_driver(&bdrv_test_leaf, "leaf1", false,
                                      &error_abort);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    co_run_sync(open_entry, f);
    for (int i = 0; i < 2; i++) {
        f->child[i] = bdrv_attach_child(f->leaf[i], i ? "b" : "a",
                                        BDRV_CHILD_DATA, &pair_child, NULL,
                                        f->pair, 0, BLK_PERM_ALL,
                                        &error_abort);
    }
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    for (int i = 0; i < 2; i++) {
        bdrv_detach_child(f->child[i]);
        bdrv_unref(f->leaf[i]);
    }
    bdrv_unref(f->pair);
}

static LeafState *leaf(Fixture *f, int i)
{
    return f->leaf[i]->opaque;
}

static void assert_leaf(Fixture *f, int i, uint64_t perm)
{
    g_assert_cmphex(leaf(f, i)->reserved, ==, perm);
    g_assert_cmphex(leaf(f, i)->set, ==, perm);
}

static void test_approved_change_is_set(Fixture *f, gconstpointer data)
{
    BlockBackend *blk = blk_new_with_bs(f->pair, "writer", WRITER_PERM,
                                        BLK_PERM_ALL, &error_abort);

    assert_leaf(f, 0, WRITER_PERM);
    assert_leaf(f, 1, WRITER_PERM);
    blk_unref(blk);
    assert_leaf(f, 0, 0);
    assert_leaf(f, 1, 0);
}

static void test_refused_change_is_aborted(Fixture *f, gconstpointer data)
{
    g_autoptr(Error) err = NULL;
    BlockBackend *reader = blk_new_with_bs(f->pair, "reader",
                                           BLK_PERM_CONSISTENT_READ,
                                           BLK_PERM_ALL, &error_abort);

    leaf(f, 1)->refuse = true;
    g_assert_null(blk_new_with_bs(f->pair, "writer", WRITER_PERM,
                                  BLK_PERM_ALL, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "leaf1 refuses");
    /* leaf0 approved the writer before leaf1 refused: released again. */
    assert_leaf(f, 0, BLK_PERM_CONSISTENT_READ);
    assert_leaf(f, 1, BLK_PERM_CONSISTENT_READ);
    blk_unref(reader);
}

#define ADD_PERM_TEST(path, fn) \
    g_test_add("/block-perm/" path, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    ADD_PERM_TEST("set", test_approved_change_is_set);
    ADD_PERM_TEST("abort", test_refused_change_is_aborted);
    return g_test_run();
}
