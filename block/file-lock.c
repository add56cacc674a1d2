/*
 * Image locking with OFD byte locks: see file-lock.h.
 */
#include "block/block-common.h"
#include "block/file-lock.h"

#include <fcntl.h>

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

bool file_lock_check(int fd, const char *filename, uint64_t perm,
                     uint64_t shared, Error **errp)
{
    ERRP_GUARD();

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

void file_lock_apply(int fd, uint64_t perm, uint64_t shared)
{
    for (int i = 0; i < LOCK_PERM_BITS; i++) {
        uint64_t bit = 1ULL << i;

        lock_byte(fd, LOCK_PERM_BASE + i, (perm & bit) ? F_RDLCK : F_UNLCK);
        lock_byte(fd, LOCK_SHARED_BASE + i,
                  (shared & bit) ? F_UNLCK : F_RDLCK);
    }
}
