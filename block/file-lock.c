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
};

static const char *const lock_perm_names[LOCK_PERM_BITS] = {
    "consistent read", "write", "write unchanged", "resize",
};

static int lock_byte(int fd, off_t byte, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = type,
    };

    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Does another open file description hold a lock on @byte? */
static bool byte_held_elsewhere(int fd, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = F_WRLCK,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return false;
    }
    return fl.l_type != F_UNLCK;
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
    lock->fd = fd;
    return true;
}

void file_lock_close(FileLock *lock)
{
    close(lock->fd);
    lock->fd = -1;
}

bool file_lock_check(FileLock *lock, const char *filename, uint64_t perm,
                     uint64_t shared, Error **errp)
{
    ERRP_GUARD();
    int fd = lock->fd;

    for (int i = 0; i < LOCK_PERM_BITS; i++) {
        uint64_t bit = 1ULL << i;

        if ((perm & bit) && byte_held_elsewhere(fd, LOCK_SHARED_BASE + i)) {
            error_setg(errp, "Failed to get \"%s\" lock", lock_perm_names[i]);
            error_append_hint(errp, "Is another process using the image "
                              "[%s]?\n", filename);
            return false;
        }
        if (!(shared & bit) && byte_held_elsewhere(fd, LOCK_PERM_BASE + i)) {
            error_setg(errp, "Failed to get shared \"%s\" lock",
                       lock_perm_names[i]);
            error_append_hint(errp, "Is another process using the image "
                              "[%s]?\n", filename);
            return false;
        }
    }
    return true;
}

void file_lock_apply(FileLock *lock, uint64_t perm, uint64_t shared)
{
    int fd = lock->fd;

    for (int i = 0; i < LOCK_PERM_BITS; i++) {
        uint64_t bit = 1ULL << i;

        lock_byte(fd, LOCK_PERM_BASE + i, (perm & bit) ? F_RDLCK : F_UNLCK);
        lock_byte(fd, LOCK_SHARED_BASE + i,
                  (shared & bit) ? F_UNLCK : F_RDLCK);
    }
}
