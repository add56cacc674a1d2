/*
 * keyval parser: KEY=VALUE,... -> json-c tree.  Syntax in
 * include/util/keyval.h.
 *
 * Two passes.  The first walks the elements left to right and inserts
 * each value into a tree of objects, creating intermediate objects for
 * dotted keys; a key that is used both as a value and as an object is an
 * error.  The second pass turns every object whose keys are all numbers
 * into an array, checking that the indexes are exactly 0 .. N-1.
 */
#include "util/osdep.h"
#include "util/keyval.h"

#define KEY_FRAGMENT_MAX 127

bool qobject_is_json_opt(const char *arg)
{
    return arg[0] == '{';
}

static bool is_help(const char *s, size_t len)
{
    return (len == 4 && !strncmp(s, "help", 4)) ||
        (len == 1 && s[0] == '?');
}

/* Length of the valid key fragment at @s (0 if invalid) */
static size_t fragment_len(const char *s, bool allow_index)
{
    size_t len;

    if (g_ascii_isdigit(*s)) {
        if (!allow_index) {
            return 0;
        }
        return strspn(s, "0123456789");
    }
    if (!g_ascii_isalpha(*s)) {
        return 0;
    }
    len = 1;
    while (g_ascii_isalnum(s[len]) || s[len] == '-' || s[len] == '_') {
        len++;
    }
    return len;
}

/*
 * Split the key [@key, @key + @len) into fragments.  Returns NULL with
 * @errp set if it is not a valid key.
 */
static GPtrArray *split_key(const char *key, size_t len, Error **errp)
{
    g_autoptr(GPtrArray) frags = g_ptr_array_new_with_free_func(g_free);
    size_t pos = 0;

    for (;;) {
        size_t flen = fragment_len(key + pos, frags->len > 0);

        if (pos + flen > len) {
            flen = 0;
        }
        if (!flen || (pos + flen < len && key[pos + flen] != '.')) {
            error_setg(errp, "Invalid parameter '%.*s'", (int)len, key);
            return NULL;
        }
        if (flen > KEY_FRAGMENT_MAX) {
            error_setg(errp, "Parameter '%.*s' is too long",
                       (int)(pos + flen), key);
            return NULL;
        }
        g_ptr_array_add(frags, g_strndup(key + pos, flen));
        pos += flen;
        if (pos == len) {
            return g_steal_pointer(&frags);
        }
        pos++;                  /* the '.' */
    }
}

/* The value starting at @s up to an unescaped ',' or the end; *end past */
static char *parse_value(const char *s, const char **end)
{
    GString *val = g_string_new("");

    while (*s) {
        if (*s == ',') {
            if (s[1] != ',') {
                break;
            }
            s++;
        }
        g_string_append_c(val, *s);
        s++;
    }
    *end = s;
    return g_string_free(val, false);
}

/* "a.b.c" from the first @n fragments */
static char *key_prefix(GPtrArray *frags, guint n)
{
    GString *s = g_string_new("");
    guint i;

    for (i = 0; i < n; i++) {
        if (i) {
            g_string_append_c(s, '.');
        }
        g_string_append(s, g_ptr_array_index(frags, i));
    }
    return g_string_free(s, false);
}

static bool insert_value(json_object *root, GPtrArray *frags, char *value,
                         Error **errp)
{
    json_object *cur = root;
    json_object *next;
    guint i;

    for (i = 0; i < frags->len; i++) {
        const char *frag = g_ptr_array_index(frags, i);
        bool last = i + 1 == frags->len;
        bool exists = json_object_object_get_ex(cur, frag, &next);

        if (exists && json_object_is_type(next, json_type_object) == last) {
            g_autofree char *prefix = key_prefix(frags, i + 1);

            error_setg(errp, "Parameters '%s.*' used inconsistently",
                       prefix);
            return false;
        }
        if (last) {
            json_object_object_add(cur, frag, json_object_new_string(value));
        } else {
            if (!exists) {
                next = json_object_new_object();
                json_object_object_add(cur, frag, next);
            }
            cur = next;
        }
    }
    return true;
}

static bool is_index(const char *key)
{
    return g_ascii_isdigit(key[0]);
}

/*
 * Turn objects with numeric keys into arrays, below and including @obj.
 * @path is the dotted key of @obj ("" for the root).  Returns the
 * (possibly new) object, or NULL with @errp set.
 */
static json_object *listify(json_object *obj, const char *path, Error **errp)
{
    size_t n = json_object_object_length(obj);
    size_t indexes = 0;
    json_object *array;
    size_t i;

    json_object_object_foreach(obj, key, val) {
        g_autofree char *sub = *path ? g_strdup_printf("%s.%s", path, key)
                                     : g_strdup(key);

        if (is_index(key)) {
            indexes++;
        }
        if (json_object_is_type(val, json_type_object)) {
            json_object *conv = listify(val, sub, errp);

            if (!conv) {
                return NULL;
            }
            if (conv != val) {
                /* Replacing the value of an existing key is safe here */
                json_object_object_add(obj, key, conv);
            }
        }
    }
    if (!indexes) {
        return obj;
    }
    if (indexes != n) {
        error_setg(errp, "Parameters '%s.*' used inconsistently", path);
        return NULL;
    }
    array = json_object_new_array_ext(n);
    for (i = 0; i < n; i++) {
        json_object *elem = NULL;
        bool found = false;

        json_object_object_foreach(obj, ikey, ival) {
            if (g_ascii_strtoull(ikey, NULL, 10) == i) {
                elem = ival;
                found = true;
                break;
            }
        }
        if (!found) {
            error_setg(errp, "Parameter '%s.%zu' missing", path, i);
            json_object_put(array);
            return NULL;
        }
        json_object_array_add(array, json_object_get(elem));
    }
    return array;
}

json_object *keyval_parse(const char *params, const char *implied_key,
                          bool *p_help, Error **errp)
{
    json_object *root = json_object_new_object();
    const char *s = params;

    while (*s) {
        size_t key_len = strcspn(s, "=,");
        g_autoptr(GPtrArray) frags = NULL;
        g_autofree char *value = NULL;

        if (s[key_len] != '=') {
            if (p_help && is_help(s, key_len)) {
                *p_help = true;
                s += key_len;
                s += *s == ',';
                implied_key = NULL;
                continue;
            }
            if (implied_key && key_len) {
                value = parse_value(s, &s);
                frags = g_ptr_array_new_with_free_func(g_free);
                g_ptr_array_add(frags, g_strdup(implied_key));
            } else {
                frags = split_key(s, key_len, errp);
                if (!frags) {
                    goto fail;
                }
                error_setg(errp, "Expected '=' after parameter '%.*s'",
                           (int)key_len, s);
                goto fail;
            }
        } else {
            frags = split_key(s, key_len, errp);
            if (!frags) {
                goto fail;
            }
            value = parse_value(s + key_len + 1, &s);
        }
        implied_key = NULL;
        if (!insert_value(root, frags, value, errp)) {
            goto fail;
        }
        s += *s == ',';
    }
    if (!listify(root, "", errp)) {
        goto fail;
    }
    return root;

fail:
    json_object_put(root);
    return NULL;
}
