/*
 * QEMU-compatible image locks (block/file-lock.c).
 *
 * Open file description locks conflict between two open() calls of the
 * same file even within one process, so two lock handles here play two
 * processes ("a" and "b"), and a third fd looks at the image the way any
 * other process would.  What that observer sees is compared with a model
 * of the protocol: byte 100 + i is held while permission i is taken,
 * byte 200 + i while it is not shared.
 */
#undef NDEBUG
#include "block/block-common.h"
#include "block/file-lock.h"

#include <fcntl.h>

enum {
    PERM_BITS = 4,
};

/* An NBD export: writes, shares everything but resize. */
#define EXPORT_PERM (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)
#define EXPORT_SHARED (BLK_PERM_ALL & ~BLK_PERM_RESIZE)

typedef struct Fixture {
    char *path;
    int a_fd;           /* the image as "a" and "b" opened it for I/O */
    int b_fd;
    int observer;
    FileLock a;
    FileLock b;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    int fd = g_file_open_tmp("test-file-lock-XXXXXX", &f->path, NULL);

    g_assert_cmpint(fd, >=, 0);
    close(fd);
    f->a_fd = open(f->path, O_RDWR);
    f->b_fd = open(f->path, O_RDWR);
    f->observer = open(f->path, O_RDWR);
    g_assert_cmpint(f->a_fd, >=, 0);
    g_assert_cmpint(f->b_fd, >=, 0);
    g_assert_cmpint(f->observer, >=, 0);
    g_assert_true(file_lock_open(&f->a, f->a_fd, f->path, &error_abort));
    g_assert_true(file_lock_open(&f->b, f->b_fd, f->path, &error_abort));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    file_lock_close(&f->a);
    file_lock_close(&f->b);
    close(f->a_fd);
    close(f->b_fd);
    close(f->observer);
    unlink(f->path);
    g_free(f->path);
}

static bool observer_sees_lock(Fixture *f, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
        .l_type = F_WRLCK,
    };

    g_assert_cmpint(fcntl(f->observer, F_OFD_GETLK, &fl), ==, 0);
    return fl.l_type != F_UNLCK;
}

/* Other processes see exactly what @perm/@shared must advertise. */
static void assert_advertised(Fixture *f, uint64_t perm, uint64_t shared)
{
    for (int i = 0; i < PERM_BITS; i++) {
        g_assert_cmpint(observer_sees_lock(f, 100 + i), ==,
                        !!(perm & (1ULL << i)));
        g_assert_cmpint(observer_sees_lock(f, 200 + i), ==,
                        !(shared & (1ULL << i)));
    }
}

static void hold_like_export(FileLock *lock, const char *path)
{
    g_assert_true(file_lock_prepare(lock, path, EXPORT_PERM, EXPORT_SHARED,
                                    &error_abort));
    file_lock_commit(lock, EXPORT_PERM, EXPORT_SHARED);
}

static void assert_refused(Fixture *f, uint64_t perm, uint64_t shared,
                           const char *message)
{
    g_autoptr(Error) err = NULL;
    g_autofree char *hint =
        g_strdup_printf("Is another process using the image [%s]?\n",
                        f->path);

    g_assert_false(file_lock_prepare(&f->b, f->path, perm, shared, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, message);
    g_assert_cmpstr(error_get_hint(err), ==, hint);
}

static void test_advertises(Fixture *f, gconstpointer data)
{
    assert_advertised(f, 0, BLK_PERM_ALL);
    hold_like_export(&f->a, f->path);
    assert_advertised(f, EXPORT_PERM, EXPORT_SHARED);
}

static void test_refuses_unshared_perm(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    assert_refused(f, BLK_PERM_RESIZE, BLK_PERM_ALL,
                   "Failed to get \"resize\" lock");
}

static void test_refuses_to_unshare_held_perm(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    assert_refused(f, BLK_PERM_CONSISTENT_READ,
                   BLK_PERM_ALL & ~BLK_PERM_WRITE,
                   "Failed to get shared \"write\" lock");
}

static void test_allows_compatible_use(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    hold_like_export(&f->b, f->path);
    assert_advertised(f, EXPORT_PERM, EXPORT_SHARED);
}

/* A handle's own locks never conflict with its new ones. */
static void test_allows_own_locks(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    g_assert_true(file_lock_prepare(&f->a, f->path,
                                    EXPORT_PERM | BLK_PERM_RESIZE,
                                    EXPORT_SHARED, &error_abort));
    file_lock_commit(&f->a, EXPORT_PERM | BLK_PERM_RESIZE, EXPORT_SHARED);
    assert_advertised(f, EXPORT_PERM | BLK_PERM_RESIZE, EXPORT_SHARED);
}

static void test_released(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    file_lock_commit(&f->a, 0, BLK_PERM_ALL);
    assert_advertised(f, 0, BLK_PERM_ALL);
    g_assert_true(file_lock_prepare(&f->b, f->path, BLK_PERM_ALL, 0,
                                    &error_abort));
}

static void test_released_on_close(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    file_lock_close(&f->a);
    assert_advertised(f, 0, BLK_PERM_ALL);
    g_assert_true(file_lock_open(&f->a, f->a_fd, f->path, &error_abort));
}

/*
 * Two openers in lockstep, as two processes starting at the same instant
 * might run: a prepares, b prepares, a commits, b would commit.  A
 * prepare that succeeded already holds the locks, so b is refused even
 * before a commits.  (Checking first and locking at commit time let both
 * through.)
 */
static void test_race_has_one_winner(Fixture *f, gconstpointer data)
{
    uint64_t perm = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;
    uint64_t shared = BLK_PERM_CONSISTENT_READ;
    g_autoptr(Error) err = NULL;

    g_assert_true(file_lock_prepare(&f->a, f->path, perm, shared,
                                    &error_abort));
    g_assert_false(file_lock_prepare(&f->b, f->path, perm, shared, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Failed to get \"write\" lock");
    file_lock_commit(&f->a, perm, shared);
    /* b's failed prepare took nothing with it: a is all there is. */
    assert_advertised(f, perm, shared);
}

/* A failed prepare leaves what was committed before, and only that. */
static void test_failed_prepare_rolls_back(Fixture *f, gconstpointer data)
{
    g_autoptr(Error) err = NULL;

    hold_like_export(&f->b, f->path);
    g_assert_true(file_lock_prepare(&f->a, f->path,
                                    BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                                    &error_abort));
    file_lock_commit(&f->a, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    g_assert_false(file_lock_prepare(&f->a, f->path, BLK_PERM_ALL, 0, &err));
    file_lock_close(&f->b);
    assert_advertised(f, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    g_assert_true(file_lock_open(&f->b, f->b_fd, f->path, &error_abort));
}

static void test_abort(Fixture *f, gconstpointer data)
{
    hold_like_export(&f->a, f->path);
    g_assert_true(file_lock_prepare(&f->a, f->path, BLK_PERM_ALL, 0,
                                    &error_abort));
    assert_advertised(f, BLK_PERM_ALL, 0);
    file_lock_abort(&f->a);
    assert_advertised(f, EXPORT_PERM, EXPORT_SHARED);
}

/* A lock byte another process holds exclusively cannot be taken. */
static void test_take_failure_reported(Fixture *f, gconstpointer data)
{
    struct flock fl = {
        .l_whence = SEEK_SET, .l_start = 101, .l_len = 1,
        .l_type = F_WRLCK,
    };
    g_autoptr(Error) err = NULL;

    g_assert_cmpint(fcntl(f->observer, F_OFD_SETLK, &fl), ==, 0);
    g_assert_false(file_lock_prepare(&f->a, f->path, EXPORT_PERM,
                                     EXPORT_SHARED, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Failed to get \"write\" lock");
    fl.l_type = F_UNLCK;
    g_assert_cmpint(fcntl(f->observer, F_OFD_SETLK, &fl), ==, 0);
    assert_advertised(f, 0, BLK_PERM_ALL);
}

static gpointer prepare_in_thread(gpointer opaque)
{
    Fixture *f = opaque;

    return GINT_TO_POINTER(file_lock_prepare(&f->a, f->path, EXPORT_PERM,
                                             EXPORT_SHARED, &error_abort));
}

/*
 * While another process is between taking and checking its locks (it
 * holds the serialising byte exclusively), a prepare waits for it.
 */
static void test_prepare_waits_for_other(Fixture *f, gconstpointer data)
{
    struct flock fl = {
        .l_whence = SEEK_SET, .l_start = 300, .l_len = 1,
        .l_type = F_WRLCK,
    };
    GThread *thread;

    g_assert_cmpint(fcntl(f->observer, F_OFD_SETLK, &fl), ==, 0);
    thread = g_thread_new("prepare", prepare_in_thread, f);
    g_usleep(50 * 1000);
    assert_advertised(f, 0, BLK_PERM_ALL);
    fl.l_type = F_UNLCK;
    g_assert_cmpint(fcntl(f->observer, F_OFD_SETLK, &fl), ==, 0);
    g_assert_true(GPOINTER_TO_INT(g_thread_join(thread)));
    assert_advertised(f, EXPORT_PERM, EXPORT_SHARED);
}

/*
 * Should the serialising byte stay taken (a stopped process, or some
 * other program's lock on the whole file), a prepare goes ahead after a
 * while instead of hanging.
 */
static void test_prepare_stops_waiting(Fixture *f, gconstpointer data)
{
    struct flock fl = {
        .l_whence = SEEK_SET, .l_start = 300, .l_len = 1,
        .l_type = F_WRLCK,
    };

    g_assert_cmpint(fcntl(f->observer, F_OFD_SETLK, &fl), ==, 0);
    g_assert_true(file_lock_prepare(&f->a, f->path, EXPORT_PERM,
                                    EXPORT_SHARED, &error_abort));
    assert_advertised(f, EXPORT_PERM, EXPORT_SHARED);
}

static void test_open_refuses_replaced_file(Fixture *f, gconstpointer data)
{
    g_autofree char *other_path = NULL;
    g_autoptr(Error) err = NULL;
    FileLock lock;
    int fd = g_file_open_tmp("test-file-lock-XXXXXX", &other_path, NULL);

    g_assert_cmpint(fd, >=, 0);
    g_assert_false(file_lock_open(&lock, fd, f->path, &err));
    g_assert_nonnull(strstr(error_get_pretty(err), "was replaced"));
    close(fd);
    unlink(other_path);
}

#define ADD_LOCK_TEST(path, fn) \
    g_test_add("/file-lock/" path, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    ADD_LOCK_TEST("advertise", test_advertises);
    ADD_LOCK_TEST("refuse/unshared-perm", test_refuses_unshared_perm);
    ADD_LOCK_TEST("refuse/unshare-held-perm",
                  test_refuses_to_unshare_held_perm);
    ADD_LOCK_TEST("refuse/take-failure", test_take_failure_reported);
    ADD_LOCK_TEST("allow/compatible", test_allows_compatible_use);
    ADD_LOCK_TEST("allow/own-locks", test_allows_own_locks);
    ADD_LOCK_TEST("allow/released", test_released);
    ADD_LOCK_TEST("allow/released-on-close", test_released_on_close);
    ADD_LOCK_TEST("race/one-winner", test_race_has_one_winner);
    ADD_LOCK_TEST("race/waits-for-other", test_prepare_waits_for_other);
    ADD_LOCK_TEST("race/stops-waiting", test_prepare_stops_waiting);
    ADD_LOCK_TEST("rollback/failed-prepare", test_failed_prepare_rolls_back);
    ADD_LOCK_TEST("rollback/abort", test_abort);
    ADD_LOCK_TEST("open/replaced", test_open_refuses_replaced_file);
    return g_test_run();
}
