/*
 * Image locking between processes, compatible with QEMU's.
 *
 * Two processes that both have an image open (blockd, qemu-img,
 * qemu-storage-daemon, a VM) must not both write it unless each allows
 * the other to.  Each permission bit i (as in BLK_PERM_*) is advertised
 * with a shared open-file-description lock on one byte of the image:
 * byte 100 + i while we hold permission i, byte 200 + i while we do not
 * share it.  Such locks never conflict with each other, only with a test
 * for an exclusive lock, so "does anybody hold byte N" can be asked
 * without disturbing the holders.  These are the byte offsets QEMU uses,
 * so the tools refuse each other's conflicting opens in both directions.
 *
 * The locks live on an open file description of their own, never used
 * for I/O: see file-lock.c for why, and for how two processes that open
 * an image at the same instant cannot both get it.
 *
 * A change of permissions is a small transaction, driven by the block
 * layer's permission update: file_lock_prepare() takes the new locks
 * (keeping the old ones) and checks for conflicts, then either
 * file_lock_commit() settles on the new permissions or file_lock_abort()
 * goes back to the last committed ones.
 */
#ifndef BLOCK_FILE_LOCK_H
#define BLOCK_FILE_LOCK_H

#include "util/error.h"

typedef struct FileLock {
    int fd;                 /* own open file description of the image */
    bool can_serialise;     /* fd is writable (see file-lock.c) */
    unsigned held;          /* lock bytes taken (mask, see file-lock.c) */
    unsigned committed;     /* lock bytes of the last commit */
} FileLock;

/*
 * Open a lock handle on the file @image_fd refers to, opened as
 * @filename, advertising nothing yet.  Fails if @filename no longer
 * names that file.
 */
bool file_lock_open(FileLock *lock, int image_fd, const char *filename,
                    Error **errp);

/* Close the handle, which drops all its locks. */
void file_lock_close(FileLock *lock);

/*
 * Advertise @perm and the lack of what @shared leaves out, on top of what
 * the handle advertises already, then make sure no other process holds a
 * conflicting lock.  On failure the handle is as before and @errp names
 * the first conflicting permission, as QEMU does.
 */
bool file_lock_prepare(FileLock *lock, const char *filename, uint64_t perm,
                       uint64_t shared, Error **errp);

/*
 * Advertise exactly @perm/@shared from now on; a prepare for (a superset
 * of) them must have succeeded, or they must be weaker than what is
 * advertised, so this only releases locks.
 */
void file_lock_commit(FileLock *lock, uint64_t perm, uint64_t shared);

/* Go back to what the last commit advertised. */
void file_lock_abort(FileLock *lock);

#endif /* BLOCK_FILE_LOCK_H */
