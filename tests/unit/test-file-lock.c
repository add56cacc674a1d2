/*
 * QEMU-compatible image locks (block/file-lock.c).
 *
 * Open file description locks conflict between two open() calls of the
 * same file even within one process, so two lock handles here play two
 * processes.
 */
#undef NDEBUG
#include "block/block-common.h"
#include "block/file-lock.h"

#include <fcntl.h>

typedef struct Fixture {
    char *path;
    int holder_fd;      /* the image as the two opened it for I/O */
    int other_fd;
    FileLock holder;
    FileLock other;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    int fd = g_file_open_tmp("test-file-lock-XXXXXX", &f->path, NULL);

    g_assert_cmpint(fd, >=, 0);
    close(fd);
    f->holder_fd = open(f->path, O_RDWR);
    f->other_fd = open(f->path, O_RDWR);
    g_assert_cmpint(f->holder_fd, >=, 0);
    g_assert_cmpint(f->other_fd, >=, 0);
    g_assert_true(file_lock_open(&f->holder, f->holder_fd, f->path,
                                 &error_abort));
    g_assert_true(file_lock_open(&f->other, f->other_fd, f->path,
                                 &error_abort));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    file_lock_close(&f->holder);
    file_lock_close(&f->other);
    close(f->holder_fd);
    close(f->other_fd);
    unlink(f->path);
    g_free(f->path);
}

static void assert_refused(Fixture *f, uint64_t perm, uint64_t shared,
                           const char *message)
{
    g_autoptr(Error) err = NULL;

    g_assert_false(file_lock_check(&f->other, "img", perm, shared, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, message);
    g_assert_cmpstr(error_get_hint(err), ==,
                    "Is another process using the image [img]?\n");
}

/* An NBD export: writes, shares everything but resize. */
static void hold_like_export(Fixture *f)
{
    file_lock_apply(&f->holder, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                    BLK_PERM_ALL & ~BLK_PERM_RESIZE);
}

static void test_refuses_unshared_perm(Fixture *f, gconstpointer data)
{
    hold_like_export(f);
    assert_refused(f, BLK_PERM_RESIZE, BLK_PERM_ALL,
                   "Failed to get \"resize\" lock");
}

static void test_refuses_to_unshare_held_perm(Fixture *f, gconstpointer data)
{
    hold_like_export(f);
    assert_refused(f, BLK_PERM_CONSISTENT_READ,
                   BLK_PERM_ALL & ~BLK_PERM_WRITE,
                   "Failed to get shared \"write\" lock");
}

static void test_allows_compatible_use(Fixture *f, gconstpointer data)
{
    hold_like_export(f);
    g_assert_true(file_lock_check(&f->other, "img",
                                  BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                  BLK_PERM_ALL & ~BLK_PERM_RESIZE,
                                  &error_abort));
    /* The holder's own fd never conflicts with itself. */
    g_assert_true(file_lock_check(&f->holder, "img", BLK_PERM_ALL, 0,
                                  &error_abort));
}

static void test_released(Fixture *f, gconstpointer data)
{
    hold_like_export(f);
    file_lock_apply(&f->holder, 0, BLK_PERM_ALL);
    g_assert_true(file_lock_check(&f->other, "img", BLK_PERM_ALL, 0,
                                  &error_abort));
}

#define ADD_LOCK_TEST(path, fn) \
    g_test_add("/file-lock/" path, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    ADD_LOCK_TEST("refuse/unshared-perm", test_refuses_unshared_perm);
    ADD_LOCK_TEST("refuse/unshare-held-perm",
                  test_refuses_to_unshare_held_perm);
    ADD_LOCK_TEST("allow/compatible", test_allows_compatible_use);
    ADD_LOCK_TEST("allow/released", test_released);
    return g_test_run();
}
