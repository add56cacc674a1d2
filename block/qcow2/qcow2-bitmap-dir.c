/*
 * qcow2 persistent bitmaps: encoding, decoding and validation of the
 * bitmap directory and its entries (see qcow2-bitmap.c for the extension,
 * the in_use protocol and the API).
 *
 * Everything here is pure: it turns bytes into Qcow2BitmapEntry values
 * and back, and checks entries against QEMU's limits, without any I/O,
 * so the unit tests can compare it with a naive model.
 */
#include "block/qcow2/qcow2.h"
#include "block/qcow2-bitmap.h"

enum {
    BME_HEADER_LEN = 24,            /* fixed part of a directory entry */
};

void qcow2_bitmap_entry_free(Qcow2BitmapEntry *e)
{
    if (e) {
        g_free(e->name);
        g_free(e);
    }
}

uint64_t qcow2_bitmap_entry_size(const Qcow2BitmapEntry *e)
{
    return ALIGN_UP(BME_HEADER_LEN + strlen(e->name), 8);
}

uint64_t qcow2_bitmap_dir_size(GPtrArray *dir)
{
    uint64_t size = 0;

    for (guint i = 0; i < dir->len; i++) {
        size += qcow2_bitmap_entry_size(dir->pdata[i]);
    }
    return size;
}

void qcow2_bitmap_dir_encode(GPtrArray *dir, uint8_t *buf)
{
    for (guint i = 0; i < dir->len; i++) {
        const Qcow2BitmapEntry *e = dir->pdata[i];
        size_t name_len = strlen(e->name);
        uint64_t size = qcow2_bitmap_entry_size(e);

        memset(buf, 0, size);
        qcow2_put_be64(buf, e->table_offset);
        qcow2_put_be32(buf + 8, e->table_size);
        qcow2_put_be32(buf + 12, e->flags);
        buf[16] = e->type;
        buf[17] = e->granularity_bits;
        qcow2_put_be16(buf + 18, name_len);
        qcow2_put_be32(buf + 20, 0);
        memcpy(buf + BME_HEADER_LEN, e->name, name_len);
        buf += size;
    }
}

GPtrArray *qcow2_bitmap_dir_decode(const uint8_t *buf, uint64_t size,
                                   uint32_t nb, Error **errp)
{
    g_autoptr(GPtrArray) dir =
        g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_entry_free);
    g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
    uint64_t pos = 0;

    for (uint32_t i = 0; i < nb; i++) {
        Qcow2BitmapEntry *e;
        uint16_t name_size;
        uint32_t extra;
        uint64_t len;

        if (size - pos < BME_HEADER_LEN) {
            error_setg(errp, "qcow2: bitmap directory: entry %" PRIu32
                       " lies beyond the end of the directory", i);
            return NULL;
        }
        name_size = qcow2_get_be16(buf + pos + 18);
        extra = qcow2_get_be32(buf + pos + 20);
        if (name_size == 0 || name_size > QCOW2_BITMAP_MAX_NAME) {
            error_setg(errp, "qcow2: bitmap directory: entry %" PRIu32
                       " has a name of %u bytes (must be 1 to %d)", i,
                       name_size, QCOW2_BITMAP_MAX_NAME);
            return NULL;
        }
        if (extra) {
            error_setg(errp, "qcow2: bitmap directory: entry %" PRIu32
                       " has %" PRIu32 " bytes of extra data, which is "
                       "not supported", i, extra);
            return NULL;
        }
        len = ALIGN_UP(BME_HEADER_LEN + (uint64_t)name_size, 8);
        if (size - pos < len) {
            error_setg(errp, "qcow2: bitmap directory: entry %" PRIu32
                       " lies beyond the end of the directory", i);
            return NULL;
        }
        e = g_new0(Qcow2BitmapEntry, 1);
        e->table_offset = qcow2_get_be64(buf + pos);
        e->table_size = qcow2_get_be32(buf + pos + 8);
        e->flags = qcow2_get_be32(buf + pos + 12);
        e->type = buf[pos + 16];
        e->granularity_bits = buf[pos + 17];
        e->name = g_strndup((const char *)buf + pos + BME_HEADER_LEN,
                            name_size);
        g_ptr_array_add(dir, e);
        if (strlen(e->name) != name_size) {
            error_setg(errp, "qcow2: bitmap directory: the name of entry %"
                       PRIu32 " contains a NUL byte", i);
            return NULL;
        }
        if (e->flags & ~QCOW2_BME_FLAGS_KNOWN) {
            error_setg(errp, "qcow2: bitmap '%s' has reserved flags set "
                       "(0x%" PRIx32 ")", e->name, e->flags);
            return NULL;
        }
        if (!g_hash_table_add(names, e->name)) {
            error_setg(errp, "qcow2: bitmap directory: the name '%s' is "
                       "used twice", e->name);
            return NULL;
        }
        pos += len;
    }
    if (pos != size) {
        error_setg(errp, "qcow2: bitmap directory: %" PRIu32 " entries take %"
                   PRIu64 " bytes, but the directory has %" PRIu64, nb, pos,
                   size);
        return NULL;
    }
    return g_steal_pointer(&dir);
}

uint64_t qcow2_bitmap_table_entries(int64_t disk_size, uint32_t granularity,
                                    int cluster_bits)
{
    uint64_t bits = DIV_ROUND_UP((uint64_t)disk_size, granularity);
    uint64_t bytes = DIV_ROUND_UP(bits, 8);

    return DIV_ROUND_UP(bytes, 1ULL << cluster_bits);
}

bool qcow2_bitmap_check_granularity_bits(int bits, Error **errp)
{
    if (bits > 31) {
        error_setg(errp, "Granularity exceeds maximum (%" PRIu32 " bytes)",
                   QCOW2_BITMAP_MAX_GRANULARITY);
        return false;
    }
    if (bits < 9) {
        error_setg(errp, "Granularity is under minimum (%" PRIu32 " bytes)",
                   QCOW2_BITMAP_MIN_GRANULARITY);
        return false;
    }
    return true;
}

bool qcow2_bitmap_entry_check(const Qcow2BitmapEntry *e, int cluster_bits,
                              int64_t disk_size, int64_t file_len,
                              Error **errp)
{
    ERRP_GUARD();
    uint64_t cluster_size = 1ULL << cluster_bits;
    uint64_t needed, table_bytes;

    if (e->type != QCOW2_BME_TYPE_DIRTY) {
        error_setg(errp, "qcow2: bitmap '%s' has unknown type %u", e->name,
                   e->type);
        return false;
    }
    if (!qcow2_bitmap_check_granularity_bits(e->granularity_bits, errp)) {
        error_prepend(errp, "qcow2: bitmap '%s': ", e->name);
        return false;
    }
    needed = qcow2_bitmap_table_entries(disk_size,
                                        1U << e->granularity_bits,
                                        cluster_bits);
    if (e->table_size > QCOW2_BME_MAX_TABLE_SIZE ||
        needed * cluster_size > QCOW2_BME_MAX_PHYS_SIZE) {
        error_setg(errp, "qcow2: bitmap '%s' is too large (%" PRIu32
                   " table entries)", e->name, e->table_size);
        return false;
    }
    if (e->table_size < needed) {
        error_setg(errp, "qcow2: bitmap '%s' has %" PRIu32 " table entries"
                   ", the disk needs %" PRIu64, e->name, e->table_size,
                   needed);
        return false;
    }
    table_bytes = (uint64_t)e->table_size * 8;
    if (e->table_size &&
        ((e->table_offset & (cluster_size - 1)) || e->table_offset == 0)) {
        error_setg(errp, "qcow2: bitmap '%s': table offset 0x%" PRIx64
                   " is invalid", e->name, e->table_offset);
        return false;
    }
    if (e->table_offset > (uint64_t)file_len ||
        table_bytes > (uint64_t)file_len - e->table_offset) {
        error_setg(errp, "qcow2: bitmap '%s': table (offset 0x%" PRIx64
                   ", %" PRIu64 " bytes) lies beyond the end of the image "
                   "file (%" PRId64 " bytes)", e->name, e->table_offset,
                   table_bytes, file_len);
        return false;
    }
    return true;
}
