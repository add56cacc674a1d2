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
 */
#ifndef BLOCK_FILE_LOCK_H
#define BLOCK_FILE_LOCK_H

#include "util/error.h"

typedef struct FileLock {
    int fd;                 /* own open file description of the image */
} FileLock;

/*
 * Open a lock handle on the file @image_fd refers to, opened as
 * @filename, advertising nothing yet.  The locks live on an open file
 * description of their own, never used for I/O: see file-lock.c.  Fails
 * if @filename no longer names that file.
 */
bool file_lock_open(FileLock *lock, int image_fd, const char *filename,
                    Error **errp);

/* Close the handle, which drops all its locks. */
void file_lock_close(FileLock *lock);

/*
 * Can this handle take @perm and share only @shared, given the locks
 * other processes hold?  Fails with QEMU's message naming the permission.
 */
bool file_lock_check(FileLock *lock, const char *filename, uint64_t perm,
                     uint64_t shared, Error **errp);

/* Advertise @perm/@shared, replacing what this handle advertised before. */
void file_lock_apply(FileLock *lock, uint64_t perm, uint64_t shared);

#endif /* BLOCK_FILE_LOCK_H */
