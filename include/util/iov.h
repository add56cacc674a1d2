/*
 * I/O vectors: the data of one block request as a list of memory pieces.
 *
 * An IOVector describes @size bytes spread over @niov struct iovec
 * elements, in order.  It never owns the memory it describes, only (if
 * it grew past one element) its array of elements.  The block layer
 * passes vectors down the graph so that a layer can add, drop or re-order
 * pieces -- a bounce buffer for an unaligned edge, a copy-on-write head
 * in front of guest data -- without copying the guest's bytes.
 *
 * Cheap cases cost no allocation: a vector of one element keeps it in
 * the embedded @local, so wrapping a single buffer, or slicing a window
 * out of a single-buffer vector, only fills in a few fields.  Because
 * @iov may point into the vector itself, an IOVector must not be copied
 * by value; pass it by pointer.
 *
 * A *slice* is a new vector for the window [offset, offset + len) of
 * another one: its elements refer to the same memory, so writing through
 * the slice writes the original's bytes.  Destroy the slice before the
 * memory it refers to goes away; destroying it leaves the original alone.
 */
#ifndef UTIL_IOV_H
#define UTIL_IOV_H

#include "util/osdep.h"

#include <sys/uio.h>

typedef struct IOVector {
    struct iovec *iov;      /* @local, or an array of @nalloc elements */
    int niov;
    int nalloc;             /* 0 while @iov is @local */
    size_t size;            /* sum of the element lengths */
    struct iovec local;
} IOVector;

/* An empty vector; adding to it allocates only past the first element. */
void iovector_init(IOVector *v);

/* A vector of the one buffer [@buf, @buf + @len); never allocates. */
void iovector_init_buf(IOVector *v, void *buf, size_t len);

/*
 * The window [@offset, @offset + @len) of @src, which must lie within it,
 * as a new vector referring to the same memory.  Allocates only if the
 * window spans more than one element of @src.
 */
void iovector_init_slice(IOVector *v, const IOVector *src, size_t offset,
                         size_t len);

/*
 * The window [@offset, @offset + @len) of @src, to pass on: @src itself
 * if the window is all of it (the usual case: one piece of work serves
 * the whole request), else @slice, set up as that slice.  @slice is
 * initialised either way; iovector_destroy() it when done.
 */
IOVector *iovector_window(IOVector *src, size_t offset, size_t len,
                          IOVector *slice);

/*
 * Append [@base, @base + @len).  A piece that continues the last element
 * in memory extends it; an empty piece is ignored.
 */
void iovector_add(IOVector *v, void *base, size_t len);

/* Append the window [@offset, @offset + @len) of @src (see above). */
void iovector_add_slice(IOVector *v, const IOVector *src, size_t offset,
                        size_t len);

/* Free the element array, if any; @v must be initialised again to reuse. */
void iovector_destroy(IOVector *v);

/*
 * Copy @len bytes from the vector, starting at its byte @offset, to @buf
 * (iovector_to_buf), or from @buf into the vector (iovector_from_buf).
 * The window must lie within the vector.
 */
void iovector_to_buf(const IOVector *v, size_t offset, void *buf,
                     size_t len);
void iovector_from_buf(IOVector *v, size_t offset, const void *buf,
                       size_t len);

/* Set the window [@offset, @offset + @len) of the vector to byte @c. */
void iovector_memset(IOVector *v, size_t offset, int c, size_t len);

/* Whether every byte of the vector is zero (true for an empty vector). */
bool iovector_is_zero(const IOVector *v);

/*
 * Whether every element starts at a multiple of @mem_align and is a
 * multiple of @len_align long: what O_DIRECT needs of each piece.
 */
bool iovector_is_aligned(const IOVector *v, size_t mem_align,
                         size_t len_align);

#endif /* UTIL_IOV_H */
