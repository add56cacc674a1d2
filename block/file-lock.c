/*
 * Image locking with OFD byte locks: see file-lock.h for the protocol.
 *
 * Why a separate open file description: an OFD lock lasts until the
 * last reference to its open file description goes away.  When a process
 * dies, its fd table is released synchronously, before a waitpid() in
 * the parent returns; but io_uring requests that were in flight hold
 * references of their own, which the kernel drops later, from a worker,
 * after the process has been reaped.  Locks on the fd used for I/O then
 * outlive a SIGKILLed daemon by several milliseconds, and a supervisor
 * that restarts it at once is refused the image.  The lock fd is never
 * handed to io_uring (or to anything else), so its locks go away with
 * the process.
 *
 * Why take before check: checking for conflicts first and taking the
 * locks afterwards lets two processes both pass the check and both open
 * the image.  Taking our locks first and then checking means that of two
 * processes racing, at least the later checker sees the other's locks.
 * Both could still see each other and both give up; to avoid that among
 * blockd processes, take-and-check runs under an exclusive lock on a
 * byte QEMU does not use (SERIALISE_BYTE), so that one of them finishes
 * first and wins.  The critical section is a few system calls, so
 * waiting for it in the main loop is fine; the wait is bounded all the
 * same.  It needs a writable fd; read-only users skip it.  Going ahead
 * without it can only make a race fail twice, never succeed twice.
 *
 * Lock bytes are tracked as a mask: bit i stands for the permission byte
 * 100 + i, bit LOCK_PERM_BITS + i for the "not shared" byte 200 + i.
 */
#include "block/block-common.h"
#include "block/file-lock.h"

#include <fcntl.h>
#include <sys/stat.h>

enum {
    LOCK_PERM_BASE = 100,
    LOCK_SHARED_BASE = 200,
    LOCK_PERM_BITS = 4,     /* consistent read, write, write unchanged,
                             * resize */
    LOCK_BYTES = 2 * LOCK_PERM_BITS,
    SERIALISE_BYTE = 300,
    SERIALISE_WAIT_US = 1000 * 1000,
    SERIALISE_POLL_US = 1000,
};

static const char *const lock_perm_names[LOCK_PERM_BITS] = {
    "consistent read", "write", "write unchanged", "resize",
};

static off_t lock_byte_offset(int index)
{
    return index < LOCK_PERM_BITS ? LOCK_PERM_BASE + index
                                  : LOCK_SHARED_BASE + index - LOCK_PERM_BITS;
}

/* The lock bytes that advertise @perm and not sharing the rest. */
static unsigned lock_bytes_for(uint64_t perm, uint64_t shared)
{
    unsigned mask = 0;

    for (int i = 0; i < LOCK_PERM_BITS; i++) {
        if (perm & (1ULL << i)) {
            mask |= 1u << i;
        }
        if (!(shared & (1ULL << i))) {
            mask |= 1u << (LOCK_PERM_BITS + i);
        }
    }
    return mask;
}

static int lock_byte(int fd, int cmd, off_t byte, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = type,
    };

    return fcntl(fd, cmd, &fl) < 0 ? -errno : 0;
}

/* 1 if another open file description holds a lock on @byte, or -errno. */
static int lock_byte_test(int fd, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = F_WRLCK,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

/*
 * QEMU's message for the lock byte @index; @err is 0 for a conflict with
 * another process, else the errno of the failed lock operation.
 */
static void lock_error(Error **errp, const char *filename, int index,
                       int err)
{
    ERRP_GUARD();
    const char *name = lock_perm_names[index % LOCK_PERM_BITS];
    const char *shared = index < LOCK_PERM_BITS ? "" : "shared ";

    if (err && err != EAGAIN && err != EACCES) {
        error_setg_errno(errp, err, "Failed to get %s\"%s\" lock", shared,
                         name);
    } else {
        error_setg(errp, "Failed to get %s\"%s\" lock", shared, name);
    }
    error_append_hint(errp, "Is another process using the image [%s]?\n",
                      filename);
}

/*
 * Take the lock bytes in @want that are not held yet.  A shared lock on
 * one byte is refused only where another process holds an exclusive one
 * (QEMU never does), but it is reported like any conflict.
 */
static bool lock_take(FileLock *lock, unsigned want, const char *filename,
                      Error **errp)
{
    for (int index = 0; index < LOCK_BYTES; index++) {
        unsigned bit = 1u << index;
        int ret;

        if (!(want & bit) || (lock->held & bit)) {
            continue;
        }
        ret = lock_byte(lock->fd, F_OFD_SETLK, lock_byte_offset(index),
                        F_RDLCK);
        if (ret < 0) {
            lock_error(errp, filename, index, -ret);
            return false;
        }
        lock->held |= bit;
    }
    return true;
}

/*
 * Release the held lock bytes not in @keep.  Unlocking a single byte we
 * hold cannot fail: there is no range to split.
 */
static void lock_release_except(FileLock *lock, unsigned keep)
{
    for (int index = 0; index < LOCK_BYTES; index++) {
        unsigned bit = 1u << index;

        if ((lock->held & bit) && !(keep & bit)) {
            lock_byte(lock->fd, F_OFD_SETLK, lock_byte_offset(index),
                      F_UNLCK);
            lock->held &= ~bit;
        }
    }
}

/*
 * Fail if another process holds a lock conflicting with @perm/@shared:
 * the "not shared" byte of a permission we take, or the permission byte
 * of one we do not share.  Our own locks are on this open file
 * description, which F_OFD_GETLK does not count.
 */
static bool lock_check_conflicts(FileLock *lock, const char *filename,
                                 uint64_t perm, uint64_t shared,
                                 Error **errp)
{
    /* QEMU's order: every permission taken, then every one not shared. */
    for (int i = 0; i < 2 * LOCK_PERM_BITS; i++) {
        bool taken = i < LOCK_PERM_BITS;
        uint64_t bit = 1ULL << (i % LOCK_PERM_BITS);
        int ret;

        if (taken ? !(perm & bit) : (shared & bit)) {
            continue;
        }
        ret = lock_byte_test(lock->fd, taken
                             ? LOCK_SHARED_BASE + i
                             : LOCK_PERM_BASE + i - LOCK_PERM_BITS);
        if (ret != 0) {
            lock_error(errp, filename, i, ret < 0 ? -ret : 0);
            return false;
        }
    }
    return true;
}

/*
 * Enter the take-and-check critical section (see above).  Another blockd
 * holds it only for a few system calls; should it stay taken for longer
 * (a stopped process, or some other program's lock over the whole file),
 * go ahead without it after SERIALISE_WAIT_US rather than hang.
 */
static bool lock_serialise_enter(FileLock *lock)
{
    int64_t deadline = g_get_monotonic_time() + SERIALISE_WAIT_US;
    int ret;

    if (!lock->can_serialise) {
        return false;
    }
    while ((ret = lock_byte(lock->fd, F_OFD_SETLK, SERIALISE_BYTE,
                            F_WRLCK)) < 0) {
        if ((ret != -EAGAIN && ret != -EACCES) ||
            g_get_monotonic_time() > deadline) {
            return false;
        }
        g_usleep(SERIALISE_POLL_US);
    }
    return true;
}

static void lock_serialise_leave(FileLock *lock)
{
    lock_byte(lock->fd, F_OFD_SETLK, SERIALISE_BYTE, F_UNLCK);
}

bool file_lock_open(FileLock *lock, int image_fd, const char *filename,
                    Error **errp)
{
    int mode = fcntl(image_fd, F_GETFL) & O_ACCMODE;
    struct stat image_st, lock_st;
    int fd;

    /*
     * Opening the name again could find another file if it was renamed
     * over in between; that is refused rather than locking the wrong one.
     */
    fd = open(filename, mode | O_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s' for locking",
                         filename);
        return false;
    }
    if (fstat(image_fd, &image_st) < 0 || fstat(fd, &lock_st) < 0 ||
        image_st.st_dev != lock_st.st_dev ||
        image_st.st_ino != lock_st.st_ino) {
        error_setg(errp, "'%s' was replaced while being opened", filename);
        close(fd);
        return false;
    }
    *lock = (FileLock) {
        .fd = fd,
        .can_serialise = mode == O_RDWR,
    };
    return true;
}

void file_lock_close(FileLock *lock)
{
    close(lock->fd);
    lock->fd = -1;
    lock->held = 0;
    lock->committed = 0;
}

bool file_lock_prepare(FileLock *lock, const char *filename, uint64_t perm,
                       uint64_t shared, Error **errp)
{
    unsigned before = lock->held;
    bool serialised = lock_serialise_enter(lock);
    bool ok;

    ok = lock_take(lock, lock_bytes_for(perm, shared), filename, errp) &&
         lock_check_conflicts(lock, filename, perm, shared, errp);
    if (!ok) {
        lock_release_except(lock, before);
    }
    if (serialised) {
        lock_serialise_leave(lock);
    }
    return ok;
}

void file_lock_commit(FileLock *lock, uint64_t perm, uint64_t shared)
{
    lock->committed = lock_bytes_for(perm, shared);
    lock_release_except(lock, lock->committed);
}

void file_lock_abort(FileLock *lock)
{
    lock_release_except(lock, lock->committed);
}
