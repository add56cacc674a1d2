/*
 * qcow2 bitmap directory encoding, decoding and validation, checked
 * against a naive model: the model writes each entry field by field with
 * explicit byte shifts (straight from the specification's table), and
 * random directories must encode to the model's bytes and decode back to
 * the same entries.  Damaged directories and entries must be refused
 * with a message naming what is wrong.
 *
 * Store/load round trips through the driver are tested by
 * tests/qemu-iotests/test_qcow2_bitmaps.py with qcow2-bitmap-tool, so
 * that qemu-img validates the result.
 */
#undef NDEBUG
#include "block/qcow2/qcow2.h"
#include "block/qcow2-bitmap.h"

/* --- The model --- */

typedef struct ModelEntry {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t gran_bits;
    GString *name;
} ModelEntry;

static void put_be(GByteArray *out, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        uint8_t b = v >> (8 * i);

        g_byte_array_append(out, &b, 1);
    }
}

static void model_encode(GByteArray *out, const ModelEntry *m)
{
    static const uint8_t zero[8];

    put_be(out, m->table_offset, 8);
    put_be(out, m->table_size, 4);
    put_be(out, m->flags, 4);
    put_be(out, m->type, 1);
    put_be(out, m->gran_bits, 1);
    put_be(out, m->name->len, 2);
    put_be(out, 0, 4);                  /* extra_data_size */
    g_byte_array_append(out, (const uint8_t *)m->name->str, m->name->len);
    g_byte_array_append(out, zero, (8 - out->len % 8) % 8);
}

static GString *random_name(GRand *rng, GHashTable *used)
{
    for (;;) {
        int len = g_rand_boolean(rng) ? g_rand_int_range(rng, 1, 12)
                                      : g_rand_int_range(rng, 1, 1024);
        GString *name = g_string_new(NULL);

        for (int i = 0; i < len; i++) {
            g_string_append_c(name, (char)g_rand_int_range(rng, 1, 256));
        }
        if (g_hash_table_add(used, g_strdup(name->str))) {
            return name;
        }
        g_string_free(name, TRUE);
    }
}

static Qcow2BitmapEntry *entry_from_model(const ModelEntry *m)
{
    Qcow2BitmapEntry *e = g_new0(Qcow2BitmapEntry, 1);

    e->table_offset = m->table_offset;
    e->table_size = m->table_size;
    e->flags = m->flags;
    e->type = m->type;
    e->granularity_bits = m->gran_bits;
    e->name = g_strdup(m->name->str);
    return e;
}

static void test_dir_roundtrip(void)
{
    GRand *rng = g_rand_new_with_seed(1);

    for (int round = 0; round < 200; round++) {
        g_autoptr(GHashTable) used =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GPtrArray) dir = g_ptr_array_new_with_free_func(
            (GDestroyNotify)qcow2_bitmap_entry_free);
        g_autoptr(GByteArray) model = g_byte_array_new();
        g_autoptr(GPtrArray) decoded = NULL;
        g_autofree uint8_t *buf = NULL;
        int n = g_rand_int_range(rng, 1, 20);
        ModelEntry *m = g_new0(ModelEntry, n);
        uint64_t size;

        for (int i = 0; i < n; i++) {
            m[i].table_offset = (uint64_t)g_rand_int(rng) << 16;
            m[i].table_size = g_rand_int(rng);
            m[i].flags = g_rand_int_range(rng, 0, 8);
            m[i].type = 1;
            m[i].gran_bits = g_rand_int_range(rng, 9, 32);
            m[i].name = random_name(rng, used);
            model_encode(model, &m[i]);
            g_ptr_array_add(dir, entry_from_model(&m[i]));
            g_assert_cmpuint(qcow2_bitmap_entry_size(dir->pdata[i]) % 8, ==,
                             0);
        }
        size = qcow2_bitmap_dir_size(dir);
        g_assert_cmpuint(size, ==, model->len);
        buf = g_malloc(size);
        qcow2_bitmap_dir_encode(dir, buf);
        g_assert(memcmp(buf, model->data, size) == 0);

        decoded = qcow2_bitmap_dir_decode(buf, size, n, &error_abort);
        g_assert_cmpuint(decoded->len, ==, n);
        for (int i = 0; i < n; i++) {
            Qcow2BitmapEntry *e = decoded->pdata[i];

            g_assert_cmpuint(e->table_offset, ==, m[i].table_offset);
            g_assert_cmpuint(e->table_size, ==, m[i].table_size);
            g_assert_cmpuint(e->flags, ==, m[i].flags);
            g_assert_cmpuint(e->type, ==, 1);
            g_assert_cmpuint(e->granularity_bits, ==, m[i].gran_bits);
            g_assert_cmpstr(e->name, ==, m[i].name->str);
            g_string_free(m[i].name, TRUE);
        }
        g_free(m);
    }
    g_rand_free(rng);
}

/* One model entry "bm" with the given name size (name bytes 'x'). */
static GByteArray *one_entry(int name_len)
{
    GByteArray *out = g_byte_array_new();
    ModelEntry m = { .table_offset = 0x10000, .table_size = 1, .type = 1,
                     .gran_bits = 16, .flags = QCOW2_BME_AUTO };

    m.name = g_string_new(NULL);
    for (int i = 0; i < name_len; i++) {
        g_string_append_c(m.name, 'x');
    }
    model_encode(out, &m);
    g_string_free(m.name, TRUE);
    return out;
}

static void expect_decode_error(const uint8_t *buf, uint64_t size,
                                uint32_t nb, const char *msg)
{
    Error *err = NULL;
    GPtrArray *dir = qcow2_bitmap_dir_decode(buf, size, nb, &err);

    g_assert_null(dir);
    g_assert_nonnull(err);
    if (!strstr(error_get_pretty(err), msg)) {
        g_error("expected '%s' in '%s'", msg, error_get_pretty(err));
    }
    error_free(err);
}

static void test_dir_damage(void)
{
    g_autoptr(GByteArray) ok = one_entry(2);
    g_autoptr(GByteArray) two = one_entry(2);
    g_autoptr(GByteArray) b = NULL;
    g_autoptr(GPtrArray) dir = NULL;

    /* The undamaged entry decodes; 1023-byte names are the maximum. */
    dir = qcow2_bitmap_dir_decode(ok->data, ok->len, 1, &error_abort);
    g_assert_cmpstr(((Qcow2BitmapEntry *)dir->pdata[0])->name, ==, "xx");
    b = one_entry(1023);
    g_ptr_array_unref(qcow2_bitmap_dir_decode(b->data, b->len, 1,
                                              &error_abort));
    g_byte_array_unref(b);

    b = one_entry(1024);
    expect_decode_error(b->data, b->len, 1, "name of 1024 bytes");
    g_byte_array_unref(b);

    b = one_entry(2);
    b->data[18] = b->data[19] = 0;          /* name_size 0 */
    expect_decode_error(b->data, b->len, 1, "name of 0 bytes");
    g_byte_array_unref(b);

    b = one_entry(2);
    b->data[23] = 8;                        /* extra_data_size 8 */
    expect_decode_error(b->data, b->len, 1, "extra data");
    g_byte_array_unref(b);

    b = one_entry(2);
    b->data[15] |= 8;                       /* reserved flag bit 3 */
    expect_decode_error(b->data, b->len, 1, "reserved flags");
    g_byte_array_unref(b);

    b = one_entry(2);
    b->data[25] = 0;                        /* NUL inside the name */
    expect_decode_error(b->data, b->len, 1, "NUL byte");
    g_byte_array_unref(b);
    b = NULL;

    /* Truncated, too many entries, bytes left over, duplicate names. */
    expect_decode_error(ok->data, ok->len - 8, 1, "beyond the end");
    expect_decode_error(ok->data, 16, 1, "beyond the end");
    expect_decode_error(ok->data, ok->len, 2, "beyond the end");
    g_byte_array_append(two, ok->data, ok->len);
    expect_decode_error(two->data, two->len, 1, "entries take 32 bytes");
    expect_decode_error(two->data, two->len, 2, "used twice");
}

static void test_table_entries(void)
{
    /* Naive: bits, then bytes, then clusters, each rounded up. */
    static const int64_t sizes[] = { 0, 1, 511, 512, 513, 65536,
                                     16 << 20, (1LL << 40) + 1 };

    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        for (int g = 9; g <= 31; g += 2) {
            for (int cb = 9; cb <= 21; cb += 4) {
                uint64_t bits, bytes, clusters;

                bits = sizes[i] / (1LL << g) + (sizes[i] % (1LL << g) != 0);
                bytes = (bits + 7) / 8;
                clusters = (bytes + (1ULL << cb) - 1) >> cb;
                g_assert_cmpuint(qcow2_bitmap_table_entries(sizes[i], 1U << g,
                                                            cb),
                                 ==, clusters);
            }
        }
    }
}

static void expect_check(const Qcow2BitmapEntry *e, int64_t disk,
                         int64_t file_len, const char *msg)
{
    Error *err = NULL;
    bool ok = qcow2_bitmap_entry_check(e, 16, disk, file_len, &err);

    if (!msg) {
        g_assert(ok);
        g_assert_null(err);
        return;
    }
    g_assert(!ok);
    if (!strstr(error_get_pretty(err), msg)) {
        g_error("expected '%s' in '%s'", msg, error_get_pretty(err));
    }
    error_free(err);
}

static void test_entry_check(void)
{
    const int64_t disk = 16 << 20, file = 1 << 20;
    Qcow2BitmapEntry good = { .table_offset = 0x30000, .table_size = 1,
                              .type = 1, .granularity_bits = 16,
                              .name = (char *)"b" };
    Qcow2BitmapEntry e;

    expect_check(&good, disk, file, NULL);
    e = good;
    e.type = 2;
    expect_check(&e, disk, file, "unknown type 2");
    e = good;
    e.granularity_bits = 8;
    expect_check(&e, disk, file, "Granularity is under minimum (512 bytes)");
    e.granularity_bits = 32;
    expect_check(&e, disk, file,
                 "Granularity exceeds maximum (2147483648 bytes)");
    e = good;
    e.table_offset = 0x30200;
    expect_check(&e, disk, file, "table offset 0x30200 is invalid");
    e.table_offset = 0;
    expect_check(&e, disk, file, "table offset 0x0 is invalid");
    e = good;
    e.table_offset = file;
    expect_check(&e, disk, file, "beyond the end of the image file");
    e.table_offset = UINT64_MAX & ~0xffffULL;
    expect_check(&e, disk, file, "beyond the end of the image file");
    /* 512-byte granularity over 16 MiB: 4 KiB of data, one cluster... */
    e = good;
    e.granularity_bits = 9;
    expect_check(&e, disk, file, NULL);
    /* ...but 4 clusters over 1 GiB. */
    expect_check(&e, 1LL << 30, file, "has 1 table entries, the disk "
                 "needs 4");
    e.table_size = 0x8000001;
    expect_check(&e, disk, file, "too large");
    /* QEMU's 512 MiB cap on the data of one bitmap. */
    e = good;
    e.granularity_bits = 9;
    e.table_size = 0x2001;
    expect_check(&e, 512LL << 30 << 3 | 512, INT64_MAX, "too large");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qcow2-bitmap/dir/roundtrip", test_dir_roundtrip);
    g_test_add_func("/qcow2-bitmap/dir/damage", test_dir_damage);
    g_test_add_func("/qcow2-bitmap/table/entries", test_table_entries);
    g_test_add_func("/qcow2-bitmap/entry/check", test_entry_check);
    return g_test_run();
}
