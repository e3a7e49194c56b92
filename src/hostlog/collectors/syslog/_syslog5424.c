/* The compiled half of the syslog batch parser: RFC 5424 frames to columns.
 *
 * split(frames, received_ns, default_host) reads each frame of a batch as
 * hostlog.collectors.syslog.parse.parse_message would, for the common shape
 * only, and returns the batch as columns (no Record and no dict per message):
 *
 *   (ts, host, app, pid, severity, facility, msg, msgid, sd, redo)
 *
 * ts        epoch ns (int); the NILVALUE timestamp gives received_ns
 * host      str; the NILVALUE gives default_host
 * app       str; the NILVALUE gives ""
 * pid       int, or None for the NILVALUE
 * severity, facility   int
 * msg       str (valid UTF-8 only), BOM removed
 * msgid     str, or None for the NILVALUE
 * sd        the STRUCTURED-DATA text (str), or None for the NILVALUE; the
 *           caller parses each distinct text once
 * redo      indexes of the frames this function did not take; their slots
 *           hold None, except in msg, which holds the frame's bytes: the
 *           caller parses them one by one
 *
 * split_block(block, received_ns, default_host, max_message, octet=False)
 * does the same for the complete frames of a connection given as one bytes
 * object (SyslogFramer.feed_blocks): it frames them as SyslogFramer does,
 * without a bytes object per frame. LF framing: LF ends a line, a CR before
 * it is dropped, empty lines are skipped. Octet counting (octet=True):
 * "MSG-LEN SP MSG" frames, as octet_prefix() finds them. It returns None,
 * and leaves the block to the framer's split_block and split(), when the
 * framer would do more than that: in an LF block a NUL (also a trailer) or
 * a line longer than max_message (cut and marked); in an octet block
 * anything but whole frames of at most max_message octets; and when the
 * first frame is not one it takes (a stream of RFC 3164, most likely, which
 * the Python batch regexes read faster).
 *
 * octet_prefix(data, start, max_message) is where the run of such whole
 * octet-counted frames that starts at `start` ends: the framer's block.
 *
 * It takes a frame only when parse_message would read it as RFC 5424 with
 * VERSION 1, a valid TIMESTAMP (years 1900-2190), a PROCID that is a pid or
 * the NILVALUE, syntactically valid STRUCTURED-DATA, and UTF-8 throughout.
 * Everything else (RFC 3164, a frame the framer cut, other versions, odd
 * PROCIDs, errors of any kind) is left to the Python parser, so what this
 * module accepts it reads exactly as the Python parser does
 * (tests/unit/collectors/syslog/test_splitter.py and test_differential.py hold
 * the two side by side; the limits are grammar.py's, see LIMITS below).
 *
 * recv_datagrams(fd, scratch, slot) is the one function here that does I/O:
 * the datagram listeners' receive (see its comment below).
 *
 * No state kept between calls.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* --- a tiny cache of the last distinct tokens of a column --------------- */
/* Hosts, apps and MSGIDs repeat within a batch: one str object each serves
 * every row that has it (the frames stay alive for the whole call). */

#define CACHE_SLOTS 16

typedef struct {
    const char *text[CACHE_SLOTS];
    Py_ssize_t len[CACHE_SLOTS];
    PyObject *str[CACHE_SLOTS];
    int used;
    int next;
} TokenCache;

static PyObject *
cached_token(TokenCache *c, const char *p, Py_ssize_t n)
{
    for (int i = 0; i < c->used; i++) {
        if (c->len[i] == n && memcmp(c->text[i], p, (size_t)n) == 0) {
            Py_INCREF(c->str[i]);
            return c->str[i];
        }
    }
    PyObject *s = PyUnicode_DecodeASCII(p, n, NULL);  /* tokens are %d33-126 */
    if (s == NULL)
        return NULL;
    int slot = c->next;
    if (c->used == CACHE_SLOTS)
        Py_DECREF(c->str[slot]);
    else
        c->used++;
    c->text[slot] = p;
    c->len[slot] = n;
    c->str[slot] = s;
    Py_INCREF(s);
    c->next = (slot + 1) % CACHE_SLOTS;
    return s;
}

static void
clear_cache(TokenCache *c)
{
    for (int i = 0; i < c->used; i++)
        Py_DECREF(c->str[i]);
    c->used = 0;
}

/* --- the grammar ------------------------------------------------------------ */
/* The limits of hostlog.collectors.syslog.grammar (LIMITS there); exported as
 * LIMITS here, and the tests hold the two to each other. */

#define PRIVAL_MAX 191
#define HOSTNAME_MAX 255
#define APP_NAME_MAX 48
#define PROCID_MAX 128
#define MSGID_MAX 32
#define SD_NAME_MAX 32
#define SECFRAC_DIGITS 6
#define YEAR_MIN 1900
#define YEAR_MAX 2190

static inline int is_digit(unsigned char ch) { return ch >= '0' && ch <= '9'; }
static inline int is_print(unsigned char ch) { return ch >= 33 && ch <= 126; }

/* SD-NAME: PRINTUSASCII except '=', SP, ']', '"' (RFC 5424 6.3) */
static inline int is_sd_name(unsigned char ch)
{
    return is_print(ch) && ch != '=' && ch != ']' && ch != '"';
}

/* A token of 1..max PRINTUSASCII followed by SP; returns its length, or -1. */
static Py_ssize_t
token(const unsigned char *p, const unsigned char *end, Py_ssize_t max)
{
    Py_ssize_t n = 0;
    while (p + n < end && is_print(p[n])) {
        if (++n > max)
            return -1;
    }
    if (n == 0 || p + n >= end || p[n] != ' ')
        return -1;
    return n;
}

static int
two_digits(const unsigned char *p)
{
    if (!is_digit(p[0]) || !is_digit(p[1]))
        return -1;
    return (p[0] - '0') * 10 + (p[1] - '0');
}

static int
days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* TIMESTAMP (RFC 5424 6.2.3) followed by SP, at p. Sets *ns and returns the
 * length before the SP, or -1 (not the shape, or no such time: the Python
 * parser says which). */
static Py_ssize_t
timestamp(const unsigned char *p, const unsigned char *end, int64_t received_ns, int64_t *ns)
{
    if (end - p >= 2 && p[0] == '-' && p[1] == ' ') {
        *ns = received_ns;
        return 1;
    }
    /* YYYY-MM-DDThh:mm:ss = 19 bytes, then at least "Z " */
    if (end - p < 21 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':'
            || p[16] != ':')
        return -1;
    int c = two_digits(p), yy = two_digits(p + 2), mo = two_digits(p + 5),
        d = two_digits(p + 8), h = two_digits(p + 11), mi = two_digits(p + 14),
        s = two_digits(p + 17);
    if (c < 0 || yy < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || s < 0)
        return -1;
    int y = c * 100 + yy;
    /* grammar.YEAR_MIN: times (and their differences) must fit int64 ns */
    if (y < YEAR_MIN || y > YEAR_MAX || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)
            || h > 23 || mi > 59 || s > 59)
        return -1;
    const unsigned char *q = p + 19;
    int64_t frac = 0;
    if (q < end && *q == '.') {
        int digits = 0;
        q++;
        while (q < end && is_digit(*q)) {
            if (++digits > SECFRAC_DIGITS)
                return -1;
            frac = frac * 10 + (*q - '0');
            q++;
        }
        if (digits == 0)
            return -1;
        for (int k = digits; k < 9; k++)
            frac *= 10;
    }
    int64_t offset = 0;
    if (q < end && *q == 'Z') {
        q++;
    } else if (end - q >= 6 && (*q == '+' || *q == '-') && q[3] == ':') {
        int oh = two_digits(q + 1), om = two_digits(q + 4);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return -1;
        offset = (int64_t)(oh * 3600 + om * 60) * (*q == '-' ? -1 : 1);
        q += 6;
    } else {
        return -1;
    }
    if (q >= end || *q != ' ')
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset;
    *ns = secs * 1000000000LL + frac;
    return q - p;
}

/* PROCID as Record.pid: a plain decimal without leading zeros below 2**31
 * (parse.parse_pid). Returns the pid, or -1. */
static long
pid_of(const unsigned char *p, Py_ssize_t n)
{
    if (n < 1 || n > 10 || (p[0] == '0' && n > 1))
        return -1;
    int64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v < 2147483648LL ? (long)v : -1;
}

/* SD-ELEMENTs at p (first byte '['): returns the end, or NULL if they do
 * not parse (the Python parser reports it). The same grammar as
 * grammar.SD_ELEMENT: a PARAM-VALUE ends at the first '"' not
 * escaped, holds no bare ']', and a backslash escapes any character. */
static const unsigned char *
structured_data(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p == '[') {
        p++;
        Py_ssize_t n = 0;
        while (p + n < end && is_sd_name(p[n]) && n <= SD_NAME_MAX)
            n++;
        if (n == 0 || n > SD_NAME_MAX)
            return NULL;
        p += n;
        while (p < end && *p == ' ') {
            p++;
            n = 0;
            while (p + n < end && is_sd_name(p[n]) && n <= SD_NAME_MAX)
                n++;
            if (n == 0 || n > SD_NAME_MAX || end - (p + n) < 2 || p[n] != '=' || p[n + 1] != '"')
                return NULL;
            p += n + 2;
            for (;;) {
                if (p >= end)
                    return NULL;
                if (*p == '"')
                    break;
                if (*p == ']')
                    return NULL;
                if (*p == '\\') {
                    if (end - p < 2)
                        return NULL;
                    p += 2;
                    /* "\\." is one character: skip the rest of a UTF-8 sequence */
                    while (p < end && (*p & 0xC0) == 0x80)
                        p++;
                    continue;
                }
                p++;
            }
            p++;  /* the closing quote */
        }
        if (p >= end || *p != ']')
            return NULL;
        p++;
    }
    return p;
}

/* --- split ------------------------------------------------------------------- */

enum { C_TS, C_HOST, C_APP, C_PID, C_SEV, C_FAC, C_MSG, C_MSGID, C_SD, C_REDO, C_COUNT };

/* What every row of one call shares. */
typedef struct {
    PyObject *cols[C_COUNT];
    TokenCache hosts, apps, msgids;
    int64_t received_ns;
    PyObject *default_host;
    PyObject *empty;  /* "" */
} Batch;

/* Fill row i of the columns from the frame start..end; 0 = taken, 1 = leave
 * to Python, -1 = a Python error (memory). */
static int
row(Batch *b, Py_ssize_t i, const unsigned char *start, const unsigned char *end)
{
    PyObject **cols = b->cols;
    /* parse_message: a frame ending with LF or NUL loses its trailing CR, LF, NUL */
    if (end > start && (end[-1] == '\n' || end[-1] == '\0')) {
        while (end > start && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == '\0'))
            end--;
    }
    const unsigned char *p = start;
    /* PRI: "<" ("0" / 1-9 *2DIGIT) ">", value <= PRIVAL_MAX */
    if (end - p < 3 || *p != '<')
        return 1;
    p++;
    int pri = 0, digits = 0;
    while (p < end && is_digit(*p) && digits < 4) {
        pri = pri * 10 + (*p - '0');
        digits++;
        p++;
    }
    if (digits == 0 || digits > 3 || (digits > 1 && p[-digits] == '0') || pri > PRIVAL_MAX
            || p >= end || *p != '>')
        return 1;
    p++;
    /* VERSION 1 only (another version becomes a field: Python's job) */
    if (end - p < 2 || p[0] != '1' || p[1] != ' ')
        return 1;
    p += 2;
    int64_t ns;
    Py_ssize_t n = timestamp(p, end, b->received_ns, &ns);
    if (n < 0)
        return 1;
    p += n + 1;
    const unsigned char *host = p;
    Py_ssize_t host_n = token(p, end, HOSTNAME_MAX);
    if (host_n < 0)
        return 1;
    p += host_n + 1;
    const unsigned char *app = p;
    Py_ssize_t app_n = token(p, end, APP_NAME_MAX);
    if (app_n < 0)
        return 1;
    p += app_n + 1;
    const unsigned char *procid = p;
    Py_ssize_t procid_n = token(p, end, PROCID_MAX);
    if (procid_n < 0)
        return 1;
    p += procid_n + 1;
    long pid = -1;
    int nil_procid = procid_n == 1 && procid[0] == '-';
    if (!nil_procid) {
        pid = pid_of(procid, procid_n);
        if (pid < 0)
            return 1;  /* kept as a "procid" field: Python's job */
    }
    const unsigned char *msgid = p;
    Py_ssize_t msgid_n = token(p, end, MSGID_MAX);
    if (msgid_n < 0)
        return 1;
    p += msgid_n + 1;
    const unsigned char *sd = p, *sd_end;
    if (p < end && *p == '-') {
        sd_end = p + 1;
    } else if (p < end && *p == '[') {
        sd_end = structured_data(p, end);
        if (sd_end == NULL)
            return 1;
    } else {
        return 1;
    }
    p = sd_end;
    const unsigned char *msg = p;
    if (p < end) {
        if (*p != ' ')
            return 1;  /* STRUCTURED-DATA must be followed by SP MSG or nothing */
        msg = p + 1;
        if (end - msg >= 3 && msg[0] == 0xEF && msg[1] == 0xBB && msg[2] == 0xBF)
            msg += 3;  /* RFC 5424 6.4: the BOM is a marker, not text */
    }

    /* Everything is read: make the objects. A decode error means the frame
     * is not UTF-8, which the Python parser keeps as bytes. */
    PyObject *msg_s = PyUnicode_DecodeUTF8((const char *)msg, end - msg, NULL);
    if (msg_s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    PyObject *sd_s = Py_None;
    Py_INCREF(sd_s);
    if (*sd == '[') {
        Py_DECREF(sd_s);
        sd_s = PyUnicode_DecodeUTF8((const char *)sd, sd_end - sd, NULL);
        if (sd_s == NULL) {
            Py_DECREF(msg_s);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                return -1;
            PyErr_Clear();
            return 1;
        }
    }
    PyObject *ts_o = PyLong_FromLongLong(ns);
    PyObject *host_o, *app_o, *msgid_o, *pid_o;
    if (host_n == 1 && host[0] == '-') {
        host_o = b->default_host;
        Py_INCREF(host_o);
    } else {
        host_o = cached_token(&b->hosts, (const char *)host, host_n);
    }
    if (app_n == 1 && app[0] == '-') {
        app_o = b->empty;
        Py_INCREF(app_o);
    } else {
        app_o = cached_token(&b->apps, (const char *)app, app_n);
    }
    if (msgid_n == 1 && msgid[0] == '-') {
        msgid_o = Py_None;
        Py_INCREF(msgid_o);
    } else {
        msgid_o = cached_token(&b->msgids, (const char *)msgid, msgid_n);
    }
    if (nil_procid) {
        pid_o = Py_None;
        Py_INCREF(pid_o);
    } else {
        pid_o = PyLong_FromLong(pid);
    }
    PyObject *sev_o = PyLong_FromLong(pri & 7), *fac_o = PyLong_FromLong(pri >> 3);
    PyObject *objs[] = {ts_o, host_o, app_o, pid_o, sev_o, fac_o, msg_s, msgid_o, sd_s};
    int failed = 0;
    for (int k = 0; k < C_REDO; k++)
        failed |= objs[k] == NULL;
    if (failed) {
        for (int k = 0; k < C_REDO; k++)
            Py_XDECREF(objs[k]);
        return -1;
    }
    for (int k = 0; k < C_REDO; k++)
        PyList_SET_ITEM(cols[k], i, objs[k]);  /* steals the reference */
    return 0;
}

/* Columns of `count` rows, and an empty redo list; 0, or -1 on an error. */
static int
batch_open(Batch *b, Py_ssize_t count, long long received_ns, PyObject *default_host)
{
    memset(b, 0, sizeof *b);
    b->received_ns = (int64_t)received_ns;
    b->default_host = default_host;
    for (int k = 0; k < C_REDO; k++) {
        if ((b->cols[k] = PyList_New(count)) == NULL)
            return -1;
    }
    if ((b->cols[C_REDO] = PyList_New(0)) == NULL || (b->empty = PyUnicode_FromString("")) == NULL)
        return -1;
    return 0;
}

/* Row i is left to Python: None in every column, `raw` (a new reference,
 * stolen) in msg, i in redo. 0, or -1 on an error. */
static int
batch_redo(Batch *b, Py_ssize_t i, PyObject *raw)
{
    if (raw == NULL)
        return -1;
    for (int k = 0; k < C_REDO; k++) {
        if (k == C_MSG) {
            PyList_SET_ITEM(b->cols[k], i, raw);
        } else {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(b->cols[k], i, Py_None);
        }
    }
    PyObject *index = PyLong_FromSsize_t(i);
    if (index == NULL || PyList_Append(b->cols[C_REDO], index) < 0) {
        Py_XDECREF(index);
        return -1;
    }
    Py_DECREF(index);
    return 0;
}

/* The columns as the result tuple (ok), or nothing (an error); frees the rest. */
static PyObject *
batch_close(Batch *b, int ok)
{
    PyObject *result = ok ? PyTuple_New(C_COUNT) : NULL;
    if (result != NULL) {
        for (int k = 0; k < C_COUNT; k++) {
            PyTuple_SET_ITEM(result, k, b->cols[k]);
            b->cols[k] = NULL;
        }
    }
    /* on an error, unfilled list slots are NULL, which list dealloc allows */
    for (int k = 0; k < C_COUNT; k++)
        Py_XDECREF(b->cols[k]);
    clear_cache(&b->hosts);
    clear_cache(&b->apps);
    clear_cache(&b->msgids);
    Py_XDECREF(b->empty);
    return result;
}

static PyObject *
split(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *frames_arg, *default_host;
    long long received_ns;
    if (!PyArg_ParseTuple(args, "OLU:split", &frames_arg, &received_ns, &default_host))
        return NULL;
    /* a tuple holds every frame alive for the whole call */
    PyObject *frames = PySequence_Tuple(frames_arg);
    if (frames == NULL)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(frames);
    Batch b;
    int ok = batch_open(&b, count, received_ns, default_host) == 0;
    for (Py_ssize_t i = 0; ok && i < count; i++) {
        PyObject *f = PyTuple_GET_ITEM(frames, i);
        int r = 1;  /* a TruncatedFrame, or not bytes at all: Python's */
        if (PyBytes_CheckExact(f)) {
            const unsigned char *start = (const unsigned char *)PyBytes_AS_STRING(f);
            r = row(&b, i, start, start + PyBytes_GET_SIZE(f));
        }
        if (r > 0) {
            Py_INCREF(f);
            r = batch_redo(&b, i, f);
        }
        ok = r == 0;
    }
    PyObject *result = batch_close(&b, ok);
    Py_DECREF(frames);
    return result;
}

/* The next line of an LF block at p (before end): sets *line_end (CR LF
 * loses its CR) and returns where the line after it starts. */
static const unsigned char *
next_line(const unsigned char *p, const unsigned char *end, const unsigned char **line_end)
{
    const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
    const unsigned char *e = lf == NULL ? end : lf;
    *line_end = e > p && e[-1] == '\r' ? e - 1 : e;
    return lf == NULL ? end : lf + 1;
}

/* The next octet-counted frame at p (RFC 6587 3.4.1: MSG-LEN SP SYSLOG-MSG,
 * MSG-LEN = NONZERO-DIGIT *DIGIT), whole and at most max_message octets:
 * sets *body and returns where the next frame starts; NULL if what is at p is
 * not such a frame (SyslogFramer reads that, with its fallbacks). */
static const unsigned char *
next_counted(const unsigned char *p, const unsigned char *end, Py_ssize_t max_message,
             const unsigned char **body)
{
    if (p >= end || *p < '1' || *p > '9')
        return NULL;
    Py_ssize_t count = 0;
    while (p < end && is_digit(*p)) {
        count = count * 10 + (*p - '0');
        if (count > max_message)
            return NULL;
        p++;
    }
    if (p >= end || *p != ' ' || end - (p + 1) < count)
        return NULL;
    *body = p + 1;
    return p + 1 + count;
}

static PyObject *
octet_prefix(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, max_message;
    if (!PyArg_ParseTuple(args, "y*nn:octet_prefix", &view, &start, &max_message))
        return NULL;
    const unsigned char *base = view.buf, *end = base + view.len, *body;
    const unsigned char *p = base + (start < 0 ? 0 : start > view.len ? view.len : start), *q;
    while ((q = next_counted(p, end, max_message, &body)) != NULL)
        p = q;
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(p - base);
}

static PyObject *
split_block(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    PyObject *default_host;
    long long received_ns;
    Py_ssize_t max_message;
    int octet = 0;
    if (!PyArg_ParseTuple(args, "y*LUn|p:split_block", &view, &received_ns, &default_host,
                          &max_message, &octet))
        return NULL;
    const unsigned char *start = view.buf, *end = start + view.len, *p, *f, *e;
    PyObject *result = NULL;
    /* First pass: count the frames, and give up on what the framer does more of. */
    Py_ssize_t count = 0;
    if (!octet && memchr(start, '\0', (size_t)view.len) != NULL)
        goto give_up;
    for (p = start; p < end;) {
        if (octet) {
            if ((p = next_counted(p, end, max_message, &f)) == NULL)
                goto give_up;
            count++;
        } else {
            f = p;
            p = next_line(p, end, &e);
            if (e - f > max_message)
                goto give_up;
            count += e > f;
        }
    }
    Batch b;
    int ok = batch_open(&b, count, received_ns, default_host) == 0;
    Py_ssize_t i = 0;
    for (p = start; ok && p < end;) {
        if (octet) {
            p = next_counted(p, end, max_message, &f);
            e = p;
        } else {
            f = p;
            p = next_line(p, end, &e);
            if (e == f)
                continue;  /* an empty line carries nothing */
        }
        int r = row(&b, i, f, e);
        if (r > 0) {
            if (i == 0) {
                batch_close(&b, 0);
                goto give_up;
            }
            r = batch_redo(&b, i, PyBytes_FromStringAndSize((const char *)f, e - f));
        }
        ok = r == 0;
        i++;
    }
    result = batch_close(&b, ok);
    PyBuffer_Release(&view);
    return result;
give_up:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* --- recv_datagrams ------------------------------------------------------------ */
/* recv_datagrams(fd, scratch, slot) -> (groups, count, drops), or None
 *
 * One recvmmsg(2) of up to len(scratch) // slot datagrams (at most
 * RECV_MAX) from the non-blocking datagram socket fd, each into its own slot
 * of scratch (a writable buffer the caller keeps, so nothing is allocated
 * per datagram; slot is the longest datagram taken whole: the kernel cuts a
 * longer one, and it is reported as truncated).
 *
 * groups  [(peer, block, count, truncated), ...]: the datagrams by sender, each
 *         sender's in arrival order, the senders in the order of their first
 *         datagram (the collector parses a batch per sender).
 *         peer: the sender's IP address as socket.recvfrom gives it (str,
 *         inet_ntop's form), None for a sender of another family (unix).
 *         block: the datagrams as RFC 6587 octet-counted frames, "LEN SP
 *         DATAGRAM" back to back (bytes): what split_block(octet=True)
 *         reads in place, and SyslogFramer.split_block splits. An empty
 *         datagram is "0 ", which split_block leaves to the framer.
 *         count: how many datagrams the block holds.
 *         truncated: the indexes, in the block, of the datagrams cut at slot.
 * count   how many datagrams were read (at least 1)
 * drops   the socket's drop counter (SO_RXQ_OVFL: the kernel's cumulative
 *         count, an unsigned 32-bit value) on the last datagram that carried
 *         it, or -1 when none did (the kernel attaches it once it is nonzero,
 *         and only with SO_RXQ_OVFL set on the socket)
 *
 * None: nothing to read (EAGAIN, or a signal came first). Any other error
 * raises OSError. The GIL is kept: the call does not block, and handing the
 * GIL to another thread (the spool writer's) for a syscall of microseconds
 * can cost a whole switch interval before the loop reads again, while the
 * receive buffer fills.
 */

#define RECV_MAX 1024

typedef union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(uint32_t))];
} Control;

/* The part of a sender's address that names the sender for the collector:
 * the IP address (not the port), or nothing (every other family is one
 * sender, peer None). */
typedef struct {
    int family;  /* AF_INET, AF_INET6, or 0 */
    unsigned char addr[16];
} PeerKey;

static void
peer_key(const struct sockaddr_storage *a, socklen_t len, PeerKey *k)
{
    memset(k, 0, sizeof *k);
    if (a->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        k->family = AF_INET;
        memcpy(k->addr, &((const struct sockaddr_in *)a)->sin_addr, 4);
    } else if (a->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        k->family = AF_INET6;
        memcpy(k->addr, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    }
}

static PyObject *
peer_text(const PeerKey *k)
{
    char text[INET6_ADDRSTRLEN];
    if (k->family == 0)
        Py_RETURN_NONE;
    if (inet_ntop(k->family, k->addr, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyUnicode_FromString(text);
}

/* Digits of n in decimal. */
static int
decimal_len(size_t n)
{
    int d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* n in decimal at out (no NUL); returns the end. */
static char *
put_decimal(char *out, size_t n)
{
    int d = decimal_len(n);
    for (int k = d - 1; k >= 0; k--) {
        out[k] = (char)('0' + n % 10);
        n /= 10;
    }
    return out + d;
}

/* The datagrams of sender g (those i with group[i] == g) as
 * (peer, block, count, truncated); NULL on an error. */
static PyObject *
recv_group(const PeerKey *key, int g, const int *group, Py_ssize_t count,
           const struct mmsghdr *msgs)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (group[i] == g)
            size += decimal_len(msgs[i].msg_len) + 1 + (Py_ssize_t)msgs[i].msg_len;
    }
    PyObject *peer = peer_text(key), *block = PyBytes_FromStringAndSize(NULL, size);
    PyObject *truncated = PyList_New(0);
    if (peer == NULL || block == NULL || truncated == NULL)
        goto fail;
    char *out = PyBytes_AS_STRING(block);
    Py_ssize_t index = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (group[i] != g)
            continue;
        size_t n = msgs[i].msg_len;
        out = put_decimal(out, n);
        *out++ = ' ';
        memcpy(out, msgs[i].msg_hdr.msg_iov->iov_base, n);
        out += n;
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
            PyObject *at = PyLong_FromSsize_t(index);
            if (at == NULL || PyList_Append(truncated, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
        }
        index++;
    }
    PyObject *result = Py_BuildValue("(OOnO)", peer, block, index, truncated);
    Py_DECREF(peer);
    Py_DECREF(block);
    Py_DECREF(truncated);
    return result;
fail:
    Py_XDECREF(peer);
    Py_XDECREF(block);
    Py_XDECREF(truncated);
    return NULL;
}

static PyObject *
recv_datagrams(PyObject *Py_UNUSED(self), PyObject *args)
{
    int fd;
    Py_buffer scratch;
    Py_ssize_t slot;
    if (!PyArg_ParseTuple(args, "iw*n:recv_datagrams", &fd, &scratch, &slot))
        return NULL;
    PyObject *result = NULL;
    struct mmsghdr *msgs = NULL;
    struct iovec *iovs = NULL;
    struct sockaddr_storage *addrs = NULL;
    Control *controls = NULL;
    PeerKey *keys = NULL;
    int *group = NULL;
    PyObject *groups = NULL;
    Py_ssize_t vlen = slot > 0 ? scratch.len / slot : 0;
    if (vlen < 1 || slot > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "recv_datagrams: scratch must hold at least one slot");
        goto done;
    }
    if (vlen > RECV_MAX)
        vlen = RECV_MAX;
    msgs = PyMem_Calloc((size_t)vlen, sizeof *msgs);
    iovs = PyMem_Malloc((size_t)vlen * sizeof *iovs);
    addrs = PyMem_Malloc((size_t)vlen * sizeof *addrs);
    controls = PyMem_Malloc((size_t)vlen * sizeof *controls);
    keys = PyMem_Malloc((size_t)vlen * sizeof *keys);
    group = PyMem_Malloc((size_t)vlen * sizeof *group);
    if (!msgs || !iovs || !addrs || !controls || !keys || !group) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < vlen; i++) {
        iovs[i].iov_base = (char *)scratch.buf + i * slot;
        iovs[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
        msgs[i].msg_hdr.msg_control = controls[i].buf;
        msgs[i].msg_hdr.msg_controllen = sizeof controls[i].buf;
    }
    int got = recvmmsg(fd, msgs, (unsigned int)vlen, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            result = Py_None;
            Py_INCREF(result);
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        goto done;
    }
    long long drops = -1;
    int distinct = 0;
    for (int i = 0; i < got; i++) {
        struct msghdr *h = &msgs[i].msg_hdr;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL
                    && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
                uint32_t v;
                memcpy(&v, CMSG_DATA(c), sizeof v);
                drops = v;
            }
        }
        PeerKey k;
        peer_key(&addrs[i], h->msg_namelen, &k);
        int g = 0;
        while (g < distinct && memcmp(&keys[g], &k, sizeof k) != 0)
            g++;
        if (g == distinct)
            keys[distinct++] = k;
        group[i] = g;
    }
    groups = PyList_New(distinct);
    if (groups == NULL)
        goto done;
    for (int g = 0; g < distinct; g++) {
        PyObject *item = recv_group(&keys[g], g, group, got, msgs);
        if (item == NULL)
            goto done;
        PyList_SET_ITEM(groups, g, item);
    }
    result = Py_BuildValue("(OiL)", groups, got, drops);
done:
    Py_XDECREF(groups);
    PyMem_Free(msgs);
    PyMem_Free(iovs);
    PyMem_Free(addrs);
    PyMem_Free(controls);
    PyMem_Free(keys);
    PyMem_Free(group);
    PyBuffer_Release(&scratch);
    return result;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(frames, received_ns, default_host) -> (ts, host, app, pid, severity, facility, "
     "msg, msgid, sd, redo): RFC 5424 frames as columns; see the module source."},
    {"split_block", split_block, METH_VARARGS,
     "split_block(block, received_ns, default_host, max_message, octet=False) -> the columns "
     "of split(), or None: the frames of a block; see the module source."},
    {"octet_prefix", octet_prefix, METH_VARARGS,
     "octet_prefix(data, start, max_message) -> the end of the whole octet-counted frames "
     "of at most max_message octets from start on."},
    {"recv_datagrams", recv_datagrams, METH_VARARGS,
     "recv_datagrams(fd, scratch, slot) -> ([(peer, block, count, truncated), ...], count, drops) "
     "or None: one recvmmsg() from a datagram socket; see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_syslog5424",
    "RFC 5424 frames to columns, the compiled half of hostlog.collectors.syslog.parse_batch.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__syslog5424(void)
{
    PyObject *m = PyModule_Create(&module);
    /* the socket option recv_datagrams reads, for the collector to set
     * (the socket module does not name it) */
    if (m != NULL && PyModule_AddIntConstant(m, "SO_RXQ_OVFL", SO_RXQ_OVFL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (m == NULL)
        return NULL;
    /* the grammar's limits as this file has them (grammar.LIMITS: the same names) */
    PyObject *limits = Py_BuildValue(
        "{sisisisisisisisisi}", "PRIVAL", PRIVAL_MAX, "HOSTNAME", HOSTNAME_MAX,
        "APP-NAME", APP_NAME_MAX, "PROCID", PROCID_MAX, "MSGID", MSGID_MAX,
        "SD-NAME", SD_NAME_MAX, "TIME-SECFRAC", SECFRAC_DIGITS, "YEAR-MIN", YEAR_MIN,
        "YEAR-MAX", YEAR_MAX);
    if (limits == NULL || PyModule_AddObject(m, "LIMITS", limits) < 0) {
        Py_XDECREF(limits);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
