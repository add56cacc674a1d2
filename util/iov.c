/*
 * I/O vectors; see include/util/iov.h.
 *
 * The elements live in @local while there is at most one of them, and
 * move to a heap array (doubling as it fills) when a second one is added.
 * Windows are found by a linear walk over the elements: vectors in the
 * block layer have a handful of elements (a request's buffer, plus the
 * bounce buffers or copy-on-write pieces a layer puts around it), so a
 * walk is cheaper than keeping an index.
 */
#include "util/iov.h"

enum {
    IOVECTOR_FIRST_ALLOC = 4,
};

void iovector_init(IOVector *v)
{
    *v = (IOVector) { .iov = &v->local };
}

void iovector_init_buf(IOVector *v, void *buf, size_t len)
{
    *v = (IOVector) {
        .iov = &v->local,
        .niov = len ? 1 : 0,
        .size = len,
        .local = { .iov_base = buf, .iov_len = len },
    };
}

/* A free element at the end, growing the array if needed. */
static struct iovec *iovector_append_slot(IOVector *v)
{
    int capacity = v->nalloc ? v->nalloc : 1;

    if (v->niov == capacity) {
        int n = MAX(capacity * 2, IOVECTOR_FIRST_ALLOC);

        if (v->nalloc) {
            v->iov = g_renew(struct iovec, v->iov, n);
        } else {
            struct iovec *array = g_new(struct iovec, n);

            memcpy(array, v->iov, v->niov * sizeof(*array));
            v->iov = array;
        }
        v->nalloc = n;
    }
    return &v->iov[v->niov++];
}

void iovector_add(IOVector *v, void *base, size_t len)
{
    struct iovec *last = v->niov ? &v->iov[v->niov - 1] : NULL;

    if (len == 0) {
        return;
    }
    if (last && (char *)last->iov_base + last->iov_len == base) {
        last->iov_len += len;
    } else {
        *iovector_append_slot(v) = (struct iovec) {
            .iov_base = base, .iov_len = len,
        };
    }
    v->size += len;
}

/*
 * The element holding byte @offset of @v (which must exist, or be the
 * end), and in *@skip where in that element the byte is.
 */
static int iovector_find(const IOVector *v, size_t offset, size_t *skip)
{
    int i = 0;

    while (i < v->niov && offset >= v->iov[i].iov_len) {
        offset -= v->iov[i].iov_len;
        i++;
    }
    *skip = offset;
    return i;
}

void iovector_add_slice(IOVector *v, const IOVector *src, size_t offset,
                        size_t len)
{
    size_t skip;
    int i;

    g_assert(offset <= src->size && len <= src->size - offset);
    for (i = iovector_find(src, offset, &skip); len > 0; i++, skip = 0) {
        size_t n = MIN(len, src->iov[i].iov_len - skip);

        iovector_add(v, (char *)src->iov[i].iov_base + skip, n);
        len -= n;
    }
}

void iovector_init_slice(IOVector *v, const IOVector *src, size_t offset,
                         size_t len)
{
    iovector_init(v);
    iovector_add_slice(v, src, offset, len);
}

IOVector *iovector_window(IOVector *src, size_t offset, size_t len,
                          IOVector *slice)
{
    iovector_init(slice);
    if (offset == 0 && len == src->size) {
        return src;
    }
    iovector_add_slice(slice, src, offset, len);
    return slice;
}

void iovector_destroy(IOVector *v)
{
    if (v->nalloc) {
        g_free(v->iov);
    }
    iovector_init(v);
}

void iovector_to_buf(const IOVector *v, size_t offset, void *buf,
                     size_t len)
{
    char *p = buf;
    size_t skip;
    int i;

    g_assert(offset <= v->size && len <= v->size - offset);
    for (i = iovector_find(v, offset, &skip); len > 0; i++, skip = 0) {
        size_t n = MIN(len, v->iov[i].iov_len - skip);

        memcpy(p, (char *)v->iov[i].iov_base + skip, n);
        p += n;
        len -= n;
    }
}

void iovector_from_buf(IOVector *v, size_t offset, const void *buf,
                       size_t len)
{
    const char *p = buf;
    size_t skip;
    int i;

    g_assert(offset <= v->size && len <= v->size - offset);
    for (i = iovector_find(v, offset, &skip); len > 0; i++, skip = 0) {
        size_t n = MIN(len, v->iov[i].iov_len - skip);

        memcpy((char *)v->iov[i].iov_base + skip, p, n);
        p += n;
        len -= n;
    }
}

void iovector_memset(IOVector *v, size_t offset, int c, size_t len)
{
    size_t skip;
    int i;

    g_assert(offset <= v->size && len <= v->size - offset);
    for (i = iovector_find(v, offset, &skip); len > 0; i++, skip = 0) {
        size_t n = MIN(len, v->iov[i].iov_len - skip);

        memset((char *)v->iov[i].iov_base + skip, c, n);
        len -= n;
    }
}

static bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    /* Each byte equals the next and the first is zero: all are. */
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

bool iovector_is_zero(const IOVector *v)
{
    for (int i = 0; i < v->niov; i++) {
        if (!buffer_is_zero(v->iov[i].iov_base, v->iov[i].iov_len)) {
            return false;
        }
    }
    return true;
}

bool iovector_is_aligned(const IOVector *v, size_t mem_align,
                         size_t len_align)
{
    if (mem_align == 1 && len_align == 1) {
        return true;    /* the common case of a format or filter node */
    }
    for (int i = 0; i < v->niov; i++) {
        if (!IS_ALIGNED((uintptr_t)v->iov[i].iov_base, mem_align) ||
            !IS_ALIGNED(v->iov[i].iov_len, len_align)) {
            return false;
        }
    }
    return true;
}
