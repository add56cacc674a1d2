/*
 * Streaming JSON parser: QEMU's syntax and error behaviour, json-c values.
 *
 * Two layers, both incremental, driven one input byte at a time (runs of
 * plain string bytes and of discarded input are scanned in bulk):
 *
 * Lexer.  A state machine turns bytes into tokens: the six structural
 * characters, strings ("..." or '...', escapes left undecoded), numbers
 * (integer or float, by their spelling), and keywords (any run of a-z).
 * Numbers and keywords end at the first byte that cannot continue them,
 * which is then lexed afresh.  A byte no token can start with, or that
 * cannot continue the current token, is a lexical error: "stray '<token
 * text so far>'".  The lexer then skips input up to a structural or a
 * control character (but not tab), as QEMU does.
 *
 * Values.  Each token first updates QEMU's two counters, open braces and
 * open brackets.  A top-level value ends when neither counter is positive
 * or either is negative; only then is its value or its error emitted.
 * Counting instead of parsing decides where a value ends, so after a
 * syntax error the rest of the value is consumed (and counted, but not
 * kept) and exactly one error is reported for it, like QEMU.
 * Until the first syntax error, tokens also drive a recursive-descent
 * parser unrolled onto an explicit stack of open arrays and objects
 * (JsonFrame); it builds the json-c value as it goes and reports the
 * first error in QEMU's words.  As in QEMU, an object key is parsed as
 * any value and then checked to be a string, and a duplicate key is
 * reported once the member's value has been parsed.
 *
 * Limits.  The tokens of one value may hold JSON_MAX_VALUE_SIZE bytes and
 * number JSON_MAX_TOKENS, nested JSON_MAX_DEPTH deep.  The size is
 * checked while a token grows, so an endless string is refused before it
 * ends and is never buffered beyond the limit.  After a limit error the
 * rest of the line is skipped (memchr for the newline) and parsing
 * starts afresh; QEMU would go on inside the unclosed value instead.
 *
 * Strings are decoded in place in the token buffer when they end:
 * escapes shrink, so the output never overtakes the input.  UTF-8 is
 * checked as QEMU does: no overlong forms except C0 80 (U+0000), no
 * surrogates, no noncharacters, nothing above U+10FFFF.
 *
 * Costs: memory is the value being built plus one token (each below
 * JSON_MAX_VALUE_SIZE); time is linear in the input.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "util/json-parser.h"

#include <assert.h>

/* Longest token text quoted in an error message */
#define JSON_MAX_QUOTED     (64 * 1024)

typedef enum JsonTokenType {
    JSON_LCURLY,
    JSON_RCURLY,
    JSON_LSQUARE,
    JSON_RSQUARE,
    JSON_COMMA,
    JSON_COLON,
    JSON_STRING,
    JSON_INTEGER,
    JSON_FLOAT,
    JSON_KEYWORD,
} JsonTokenType;

typedef enum LexState {
    LEX_START,          /* between tokens */
    LEX_RECOVERY,       /* after a lexical error */
    LEX_SKIP_LINE,      /* after a limit error: up to a newline */
    LEX_STRING,
    LEX_ESCAPE,         /* after a backslash in a string */
    LEX_MINUS,          /* "-" */
    LEX_ZERO,           /* "0", "-0" */
    LEX_INT,            /* "1", "-12" */
    LEX_POINT,          /* "1." */
    LEX_FRAC,           /* "1.5" */
    LEX_EXP,            /* "1e" */
    LEX_EXP_SIGN,       /* "1e+" */
    LEX_EXP_DIGITS,     /* "1e5" */
    LEX_KEYWORD,
} LexState;

/* What an open array or object accepts next */
typedef enum FrameState {
    ARR_FIRST,          /* after '[': a value or ']' */
    ARR_VALUE,          /* after ',' */
    ARR_SEP,            /* after a value: ',' or ']' */
    OBJ_FIRST,          /* after '{': a key or '}' */
    OBJ_KEY,            /* after ',' */
    OBJ_COLON,          /* after a key */
    OBJ_VALUE,          /* after ':' */
    OBJ_SEP,            /* after a value: ',' or '}' */
} FrameState;

typedef struct JsonFrame {
    json_object *container;
    char *key;          /* OBJ_COLON, OBJ_VALUE: the member's key */
    FrameState state;
} JsonFrame;

struct JsonStreamer {
    /* Set at creation */
    JsonEmitFunc *emit;
    void *opaque;

    /* Lexer */
    LexState state;
    char quote;             /* LEX_STRING, LEX_ESCAPE: '"' or '\'' */
    GString *token;         /* text of the token being lexed */

    /* The top-level value being parsed */
    int braces;             /* '{' minus '}' */
    int brackets;           /* '[' minus ']' */
    size_t value_bytes;     /* token bytes so far */
    size_t value_tokens;    /* tokens so far; 0 between values */
    Error *err;             /* first syntax error; stops the parser */
    GArray *stack;          /* JsonFrame, innermost last */
    json_object *result;    /* the parsed value, once complete */
};

static inline bool is_structural(unsigned char c)
{
    return c == '{' || c == '}' || c == '[' || c == ']' ||
        c == ',' || c == ':';
}

static inline bool is_whitespace(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Bytes that end error recovery */
static inline bool is_resync(unsigned char c)
{
    return is_structural(c) || (c < 0x20 && c != '\t') || c >= 0xfe;
}

/* Bytes that may not appear raw in a string (or after a backslash) */
static inline bool is_string_error(unsigned char c)
{
    return c < 0x20 || c >= 0xfe;
}

static inline bool is_noncharacter(uint32_t cp)
{
    return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
}

/* --- values --- */

/* Free the partial value */
static void json_drop_stack(JsonStreamer *s)
{
    while (s->stack->len) {
        JsonFrame *f = &g_array_index(s->stack, JsonFrame, s->stack->len - 1);

        json_object_put(f->container);
        g_free(f->key);
        g_array_set_size(s->stack, s->stack->len - 1);
    }
}

static void json_reset_value(JsonStreamer *s)
{
    json_drop_stack(s);
    json_object_put(s->result);
    s->result = NULL;
    error_free(s->err);
    s->err = NULL;
    s->braces = 0;
    s->brackets = 0;
    s->value_bytes = 0;
    s->value_tokens = 0;
}

static void json_emit(JsonStreamer *s, json_object *value, Error *err)
{
    s->emit(s->opaque, value, err);
}

/* A syntax error in the current value; only the first one counts */
static void json_parse_error(JsonStreamer *s, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void json_parse_error(JsonStreamer *s, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    if (s->err) {
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(&s->err, "JSON parse error, %s", msg);
    /* The partial value is of no further use */
    json_drop_stack(s);
}

/* Discard the current value and report @msg; skip the rest of the line */
static void json_limit_error(JsonStreamer *s, const char *msg)
{
    Error *err = NULL;

    json_reset_value(s);
    g_string_truncate(s->token, 0);
    s->state = LEX_SKIP_LINE;
    error_setg(&err, "%s", msg);
    json_emit(s, NULL, err);
}

/* The token being lexed has become too large */
static bool json_token_too_big(JsonStreamer *s, size_t more)
{
    return s->token->len + more > JSON_MAX_TOKEN_SIZE ||
        s->value_bytes + s->token->len + more > JSON_MAX_VALUE_SIZE;
}

static JsonFrame *json_top(JsonStreamer *s)
{
    if (!s->stack->len) {
        return NULL;
    }
    return &g_array_index(s->stack, JsonFrame, s->stack->len - 1);
}

/* A complete value @value (reference stolen) for the innermost frame */
static void json_deliver(JsonStreamer *s, json_object *value)
{
    JsonFrame *top = json_top(s);

    if (!top) {
        s->result = value;
        return;
    }
    switch (top->state) {
    case ARR_FIRST:
    case ARR_VALUE:
        json_object_array_add(top->container, value);
        top->state = ARR_SEP;
        break;
    case OBJ_FIRST:
    case OBJ_KEY:
        if (!json_object_is_type(value, json_type_string)) {
            json_object_put(value);
            json_parse_error(s, "key is not a string in object");
            return;
        }
        top->key = g_strdup(json_object_get_string(value));
        json_object_put(value);
        top->state = OBJ_COLON;
        break;
    case OBJ_VALUE:
        if (json_object_object_get_ex(top->container, top->key, NULL)) {
            json_object_put(value);
            json_parse_error(s, "duplicate key");
            return;
        }
        json_object_object_add_ex(top->container, top->key, value,
                                  JSON_C_OBJECT_ADD_KEY_IS_NEW);
        g_free(top->key);
        top->key = NULL;
        top->state = OBJ_SEP;
        break;
    default:
        g_assert_not_reached();
    }
}

static void json_push(JsonStreamer *s, json_object *container,
                      FrameState state)
{
    JsonFrame f = { .container = container, .state = state };

    g_array_append_val(s->stack, f);
}

static void json_close(JsonStreamer *s)
{
    JsonFrame *top = json_top(s);
    json_object *container = top->container;

    assert(!top->key);
    g_array_set_size(s->stack, s->stack->len - 1);
    json_deliver(s, container);
}

/* Four hex digits at @p (before @end) as a number, or -1 */
static int json_hex4(const char *p, const char *end)
{
    int v = 0;

    if (end - p < 4) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(p[i]);

        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/*
 * Length of the valid UTF-8 sequence (not ASCII) at @p, or 0.  C0 80 is
 * accepted for U+0000.
 */
static size_t json_utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t len, i;
    uint32_t cp, min;

    if (p[0] < 0xc0) {
        return 0;
    } else if (p[0] < 0xe0) {
        len = 2;
        cp = p[0] & 0x1f;
        min = 0x80;
    } else if (p[0] < 0xf0) {
        len = 3;
        cp = p[0] & 0x0f;
        min = 0x800;
    } else if (p[0] < 0xf8) {
        len = 4;
        cp = p[0] & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < len) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min && !(len == 2 && cp == 0)) {
        return 0;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
        is_noncharacter(cp)) {
        return 0;
    }
    return len;
}

/*
 * Decode the \u escape at *@in (one, or two for a surrogate pair) into
 * *@out.  @end is the closing quote, @tok_end the end of the token.
 */
static bool json_decode_unicode(JsonStreamer *s, const char **in,
                                char **out, const char *end,
                                const char *tok_end)
{
    const char *esc = *in;
    size_t n = 6;
    int cp = json_hex4(esc + 2, end);

    if (cp >= 0xd800 && cp <= 0xdbff) {
        int lo = -1;

        if (end - esc >= 12 && esc[6] == '\\' && esc[7] == 'u') {
            lo = json_hex4(esc + 8, end);
        }
        if (lo >= 0xdc00 && lo <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            n = 12;
        } else {
            cp = -1;
        }
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        cp = -1;
    }
    if (cp < 0 || is_noncharacter(cp)) {
        json_parse_error(s, "%.*s is not a valid Unicode character",
                         (int)MIN(n, (size_t)(tok_end - esc)), esc);
        return false;
    }
    if (cp == 0) {
        *(*out)++ = (char)0xc0;
        *(*out)++ = (char)0x80;
    } else {
        *out += g_unichar_to_utf8(cp, *out);
    }
    *in = esc + n;
    return true;
}

/*
 * Decode the string token in s->token (quotes included) in place.
 * Returns false after reporting a syntax error.
 */
static bool json_decode_string(JsonStreamer *s)
{
    char *str = s->token->str;
    const char *tok_end = str + s->token->len;
    const char *end = tok_end - 1;          /* the closing quote */
    const char *in = str + 1;
    char *out = str;

    while (in < end) {
        unsigned char c = *in;
        size_t n;

        if (c == '\\') {
            /* The lexer ensures the escaped byte precedes the quote */
            switch (in[1]) {
            case '"':
            case '\'':
            case '\\':
            case '/':
                *out++ = in[1];
                break;
            case 'b':
                *out++ = '\b';
                break;
            case 'f':
                *out++ = '\f';
                break;
            case 'n':
                *out++ = '\n';
                break;
            case 'r':
                *out++ = '\r';
                break;
            case 't':
                *out++ = '\t';
                break;
            case 'u':
                if (!json_decode_unicode(s, &in, &out, end, tok_end)) {
                    return false;
                }
                continue;
            default:
                json_parse_error(s, "invalid escape sequence in string");
                return false;
            }
            in += 2;
        } else if (c < 0x80) {
            /* Copy the run of plain ASCII in one go */
            const char *p = in + 1;

            while (p < end && (unsigned char)*p < 0x80 && *p != '\\') {
                p++;
            }
            memmove(out, in, p - in);
            out += p - in;
            in = p;
        } else {
            n = json_utf8_len((const unsigned char *)in,
                              (const unsigned char *)end);
            if (!n) {
                json_parse_error(s, "invalid UTF-8 sequence in string");
                return false;
            }
            memmove(out, in, n);
            out += n;
            in += n;
        }
    }
    g_string_truncate(s->token, out - str);
    return true;
}

static json_object *json_parse_number(const char *text, bool is_float)
{
    if (!is_float) {
        gint64 i;
        guint64 u;

        errno = 0;
        i = g_ascii_strtoll(text, NULL, 10);
        if (!errno) {
            return json_object_new_int64(i);
        }
        if (text[0] != '-') {
            errno = 0;
            u = g_ascii_strtoull(text, NULL, 10);
            if (!errno) {
                return json_object_new_uint64(u);
            }
        }
        /* Beyond 64 bits: a double, as in QEMU */
    }
    return json_object_new_double(g_ascii_strtod(text, NULL));
}

/* A token where a value must start */
static void json_parse_value(JsonStreamer *s, JsonTokenType type)
{
    const char *text = s->token->str;
    JsonFrame *top;
    json_object *value;

    switch (type) {
    case JSON_LCURLY:
        json_push(s, json_object_new_object(), OBJ_FIRST);
        return;
    case JSON_LSQUARE:
        json_push(s, json_object_new_array(), ARR_FIRST);
        return;
    case JSON_STRING:
        if (!json_decode_string(s)) {
            return;
        }
        top = json_top(s);
        if (top && (top->state == OBJ_FIRST || top->state == OBJ_KEY)) {
            /* A key: skip the detour through a json_object */
            top->key = g_strndup(s->token->str, s->token->len);
            top->state = OBJ_COLON;
            return;
        }
        value = json_object_new_string_len(s->token->str, s->token->len);
        break;
    case JSON_INTEGER:
    case JSON_FLOAT:
        value = json_parse_number(text, type == JSON_FLOAT);
        break;
    case JSON_KEYWORD:
        if (!strcmp(text, "true")) {
            value = json_object_new_boolean(true);
        } else if (!strcmp(text, "false")) {
            value = json_object_new_boolean(false);
        } else if (!strcmp(text, "null")) {
            value = NULL;
        } else {
            json_parse_error(s, "invalid keyword '%.*s'",
                             (int)MIN(s->token->len, JSON_MAX_QUOTED), text);
            return;
        }
        break;
    default:
        json_parse_error(s, "expecting value");
        return;
    }
    json_deliver(s, value);
}

/* Feed one token to the recursive-descent parser */
static void json_parse_token(JsonStreamer *s, JsonTokenType type)
{
    JsonFrame *top = json_top(s);

    switch (top ? top->state : ARR_VALUE) {
    case ARR_FIRST:
        if (type == JSON_RSQUARE) {
            json_close(s);
            return;
        }
        break;
    case ARR_SEP:
        if (type == JSON_COMMA) {
            top->state = ARR_VALUE;
        } else if (type == JSON_RSQUARE) {
            json_close(s);
        } else {
            json_parse_error(s, "expected separator in list");
        }
        return;
    case OBJ_FIRST:
        if (type == JSON_RCURLY) {
            json_close(s);
            return;
        }
        break;
    case OBJ_COLON:
        if (type == JSON_COLON) {
            top->state = OBJ_VALUE;
        } else {
            json_parse_error(s, "missing : in object pair");
        }
        return;
    case OBJ_SEP:
        if (type == JSON_COMMA) {
            top->state = OBJ_KEY;
        } else if (type == JSON_RCURLY) {
            json_close(s);
        } else {
            json_parse_error(s, "expected separator in dict");
        }
        return;
    default:
        break;
    }
    json_parse_value(s, type);
}

/*
 * A complete token; its text (for strings, numbers and keywords) is in
 * s->token, @len bytes long.
 */
static void json_token(JsonStreamer *s, JsonTokenType type, size_t len)
{
    json_object *value;
    Error *err;

    switch (type) {
    case JSON_LCURLY:
        s->braces++;
        break;
    case JSON_RCURLY:
        s->braces--;
        break;
    case JSON_LSQUARE:
        s->brackets++;
        break;
    case JSON_RSQUARE:
        s->brackets--;
        break;
    default:
        break;
    }
    if (s->value_bytes + len > JSON_MAX_VALUE_SIZE) {
        json_limit_error(s, "JSON token size limit exceeded");
        return;
    }
    if (s->value_tokens + 1 > JSON_MAX_TOKENS) {
        json_limit_error(s, "JSON token count limit exceeded");
        return;
    }
    if (s->braces + s->brackets > JSON_MAX_DEPTH) {
        json_limit_error(s, "JSON nesting depth limit exceeded");
        return;
    }
    s->value_bytes += len;
    s->value_tokens++;
    if (!s->err) {
        json_parse_token(s, type);
    }
    g_string_truncate(s->token, 0);

    if ((s->braces > 0 || s->brackets > 0) &&
        s->braces >= 0 && s->brackets >= 0) {
        return;
    }
    /* The value ends here, by QEMU's count */
    err = s->err;
    s->err = NULL;
    value = err ? NULL : s->result;
    assert(err || !s->stack->len);
    s->result = NULL;
    json_reset_value(s);
    json_emit(s, value, err);
}

/* The byte that ends the token text in s->token is not JSON */
static void json_lex_error(JsonStreamer *s)
{
    size_t len = strnlen(s->token->str, MIN(s->token->len, JSON_MAX_QUOTED));
    Error *err = NULL;

    error_setg(&err, "JSON parse error, stray '%.*s'", (int)len,
               s->token->str);
    json_reset_value(s);
    g_string_truncate(s->token, 0);
    s->state = LEX_RECOVERY;
    json_emit(s, NULL, err);
}

/* Append @c to a number or keyword and move to @state */
static void json_lex_append(JsonStreamer *s, unsigned char c, LexState state)
{
    if (json_token_too_big(s, 1)) {
        json_limit_error(s, "JSON token size limit exceeded");
        return;
    }
    g_string_append_c(s->token, c);
    s->state = state;
}

/* End the number or keyword in s->token before the current byte */
static void json_lex_end_scalar(JsonStreamer *s)
{
    JsonTokenType type;

    switch (s->state) {
    case LEX_ZERO:
    case LEX_INT:
        type = JSON_INTEGER;
        break;
    case LEX_FRAC:
    case LEX_EXP_DIGITS:
        type = JSON_FLOAT;
        break;
    case LEX_KEYWORD:
        type = JSON_KEYWORD;
        break;
    default:
        g_assert_not_reached();
    }
    s->state = LEX_START;
    json_token(s, type, s->token->len);
}

/* Lex from @p in LEX_START; returns the first byte not consumed */
static const unsigned char *json_lex_start(JsonStreamer *s,
                                           const unsigned char *p,
                                           const unsigned char *end)
{
    unsigned char c;

    while (p < end && is_whitespace(*p)) {
        p++;
    }
    if (p == end) {
        return p;
    }
    c = *p++;
    switch (c) {
    case '{':
        json_token(s, JSON_LCURLY, 1);
        break;
    case '}':
        json_token(s, JSON_RCURLY, 1);
        break;
    case '[':
        json_token(s, JSON_LSQUARE, 1);
        break;
    case ']':
        json_token(s, JSON_RSQUARE, 1);
        break;
    case ',':
        json_token(s, JSON_COMMA, 1);
        break;
    case ':':
        json_token(s, JSON_COLON, 1);
        break;
    case '"':
    case '\'':
        s->quote = c;
        json_lex_append(s, c, LEX_STRING);
        break;
    case '-':
        json_lex_append(s, c, LEX_MINUS);
        break;
    case '0':
        json_lex_append(s, c, LEX_ZERO);
        break;
    default:
        if (c >= '1' && c <= '9') {
            json_lex_append(s, c, LEX_INT);
        } else if (c >= 'a' && c <= 'z') {
            json_lex_append(s, c, LEX_KEYWORD);
        } else {
            g_string_append_c(s->token, c);
            json_lex_error(s);
        }
    }
    return p;
}

/* Lex from @p inside a string; returns the first byte not consumed */
static const unsigned char *json_lex_string(JsonStreamer *s,
                                            const unsigned char *p,
                                            const unsigned char *end)
{
    const unsigned char *q = p;
    unsigned char c;

    while (q < end && *q != s->quote && *q != '\\' && !is_string_error(*q)) {
        q++;
    }
    if (json_token_too_big(s, q - p + (q < end))) {
        json_limit_error(s, "JSON token size limit exceeded");
        return q;
    }
    g_string_append_len(s->token, (const char *)p, q - p);
    if (q == end) {
        return q;
    }
    c = *q++;
    g_string_append_c(s->token, c);
    if (c == s->quote) {
        s->state = LEX_START;
        json_token(s, JSON_STRING, s->token->len);
    } else if (c == '\\') {
        s->state = LEX_ESCAPE;
    } else {
        json_lex_error(s);
    }
    return q;
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_exp(unsigned char c)
{
    return c == 'e' || c == 'E';
}

/*
 * The byte at @p in a number or keyword; returns the next byte to lex.
 * A byte that cannot continue a complete token ends it and is lexed
 * again; one that cannot continue an incomplete token is an error.
 */
static const unsigned char *json_lex_scalar(JsonStreamer *s,
                                            const unsigned char *p)
{
    unsigned char c = *p;
    /* LEX_START: @c ends the token; LEX_RECOVERY: @c is an error */
    LexState next;

    switch (s->state) {
    case LEX_MINUS:
        next = c == '0' ? LEX_ZERO : is_digit(c) ? LEX_INT : LEX_RECOVERY;
        break;
    case LEX_ZERO:
        next = is_digit(c) ? LEX_RECOVERY : c == '.' ? LEX_POINT :
            is_exp(c) ? LEX_EXP : LEX_START;
        break;
    case LEX_INT:
        next = is_digit(c) ? LEX_INT : c == '.' ? LEX_POINT :
            is_exp(c) ? LEX_EXP : LEX_START;
        break;
    case LEX_POINT:
        next = is_digit(c) ? LEX_FRAC : LEX_RECOVERY;
        break;
    case LEX_FRAC:
        next = is_digit(c) ? LEX_FRAC : is_exp(c) ? LEX_EXP : LEX_START;
        break;
    case LEX_EXP:
        next = is_digit(c) ? LEX_EXP_DIGITS :
            (c == '+' || c == '-') ? LEX_EXP_SIGN : LEX_RECOVERY;
        break;
    case LEX_EXP_SIGN:
        next = is_digit(c) ? LEX_EXP_DIGITS : LEX_RECOVERY;
        break;
    case LEX_EXP_DIGITS:
        next = is_digit(c) ? LEX_EXP_DIGITS : LEX_START;
        break;
    case LEX_KEYWORD:
        next = c >= 'a' && c <= 'z' ? LEX_KEYWORD : LEX_START;
        break;
    default:
        g_assert_not_reached();
    }
    if (next == LEX_START) {
        json_lex_end_scalar(s);
        return p;
    }
    if (next == LEX_RECOVERY) {
        g_string_append_c(s->token, c);
        json_lex_error(s);
    } else {
        json_lex_append(s, c, next);
    }
    return p + 1;
}

void json_streamer_feed(JsonStreamer *s, const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    const unsigned char *end = p + len;

    while (p < end) {
        unsigned char c = *p;
        const unsigned char *nl;

        switch (s->state) {
        case LEX_START:
            p = json_lex_start(s, p, end);
            break;
        case LEX_RECOVERY:
            while (p < end && !is_resync(*p)) {
                p++;
            }
            if (p < end) {
                s->state = LEX_START;
            }
            break;
        case LEX_SKIP_LINE:
            nl = memchr(p, '\n', end - p);
            if (!nl) {
                return;
            }
            p = nl + 1;
            s->state = LEX_START;
            break;
        case LEX_STRING:
            p = json_lex_string(s, p, end);
            break;
        case LEX_ESCAPE:
            p++;
            if (is_string_error(c)) {
                g_string_append_c(s->token, c);
                json_lex_error(s);
            } else {
                json_lex_append(s, c, LEX_STRING);
            }
            break;
        case LEX_MINUS:
        case LEX_ZERO:
        case LEX_INT:
        case LEX_POINT:
        case LEX_FRAC:
        case LEX_EXP:
        case LEX_EXP_SIGN:
        case LEX_EXP_DIGITS:
        case LEX_KEYWORD:
            p = json_lex_scalar(s, p);
            break;
        }
    }
}

void json_streamer_flush(JsonStreamer *s)
{
    Error *err = NULL;

    switch (s->state) {
    case LEX_ZERO:
    case LEX_INT:
    case LEX_FRAC:
    case LEX_EXP_DIGITS:
    case LEX_KEYWORD:
        json_lex_end_scalar(s);
        break;
    case LEX_STRING:
    case LEX_ESCAPE:
    case LEX_MINUS:
    case LEX_POINT:
    case LEX_EXP:
    case LEX_EXP_SIGN:
        json_lex_error(s);
        break;
    default:
        break;
    }
    s->state = LEX_START;
    if (s->value_tokens) {
        err = s->err;
        s->err = NULL;
        if (!err) {
            error_setg(&err, "JSON parse error, premature EOI");
        }
        json_reset_value(s);
        json_emit(s, NULL, err);
    }
}

JsonStreamer *json_streamer_new(JsonEmitFunc *emit, void *opaque)
{
    JsonStreamer *s = g_new0(JsonStreamer, 1);

    s->emit = emit;
    s->opaque = opaque;
    s->state = LEX_START;
    s->token = g_string_new("");
    s->stack = g_array_new(false, false, sizeof(JsonFrame));
    return s;
}

void json_streamer_free(JsonStreamer *s)
{
    if (!s) {
        return;
    }
    json_reset_value(s);
    g_array_free(s->stack, true);
    g_string_free(s->token, true);
    g_free(s);
}

/* --- one-shot parsing --- */

typedef struct JsonParseState {
    json_object *result;
    bool have_result;
    Error *err;
} JsonParseState;

/* Keep the first value or error; a second value is an error */
static void json_parse_string_emit(void *opaque, json_object *value,
                                   Error *err)
{
    JsonParseState *st = opaque;

    if (st->have_result) {
        json_object_put(st->result);
        st->result = NULL;
        st->have_result = false;
        error_setg(&st->err, "Expecting at most one JSON value");
    }
    if (st->err) {
        json_object_put(value);
        error_free(err);
        return;
    }
    if (err) {
        st->err = err;
    } else {
        st->result = value;
        st->have_result = true;
    }
}

json_object *json_parse_string(const char *str, Error **errp)
{
    JsonParseState st = { 0 };
    g_autoptr(JsonStreamer) s = json_streamer_new(json_parse_string_emit,
                                                  &st);

    json_streamer_feed(s, str, strlen(str));
    json_streamer_flush(s);
    if (st.err) {
        error_propagate(errp, st.err);
        return NULL;
    }
    if (!st.have_result) {
        error_setg(errp, "Expecting a JSON value");
        return NULL;
    }
    return st.result;
}
