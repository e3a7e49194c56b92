/* The compiled half of the journald collector: journal entries to columns.
 *
 * read_batch(reader, limit, hostname) reads up to `limit` entries from the
 * current position of a systemd-python reader (systemd.journal.Reader or
 * its base _Reader) with libsystemd's own calls, and maps each as
 * hostlog.journal.fields.journal_to_record would, for the common shape
 * only, straight into columns (no dict of raw bytes, no Record per entry):
 *
 *   (ts, host, app, pid, severity, facility, msg, fields, redo,
 *    skipped, skip_error, stop_error)
 *
 * ts        epoch ns (int): __REALTIME_TIMESTAMP * 1000
 * host      _HOSTNAME (str), or `hostname` when the entry has none
 * app       SYSLOG_IDENTIFIER (str)
 * pid       _PID (int), or None when the entry has none
 * severity  PRIORITY (int)
 * facility  SYSLOG_FACILITY (int), or None when the entry has none
 * msg       MESSAGE (str)
 * fields    a dict per entry: every other field (str), in the entry's order,
 *           then __MONOTONIC_TIMESTAMP (str)
 * redo      the entries this function did not map, as (row, raw, realtime,
 *           monotonic): raw is the entry as Reader._get_all gives it (name ->
 *           bytes, a list for a repeated name); the row's slots hold None and
 *           the caller maps it with journal_to_record
 * skipped   entries libsystemd could not read (journalctl skips them too);
 *           skip_error the last such error (str) or None
 * stop_error  why reading stopped before `limit` and before the end of the
 *           journal (str, sd_journal_next failed), or None
 *
 * An entry is mapped here only when journal_to_record would take every core
 * field as it is: each field once, every value UTF-8, no name starting with
 * "__" or "_HOSTLOG_", MESSAGE and a non-empty SYSLOG_IDENTIFIER present,
 * PRIORITY a digit 0-7, _PID and SYSLOG_FACILITY canonical numbers (the
 * facility at most 23), _HOSTNAME non-empty if present. Everything else is
 * in `redo`, so the rules of the mapping live in journal_to_record
 * (tests/unit/collectors/test_journald_map.py holds the two side by side).
 *
 * The reader is left on the last entry read: its cursor is the batch's.
 * libsystemd's part (stepping, reading the fields) copies each batch into
 * one buffer without the GIL, so the spool writer's thread encodes
 * meanwhile; the objects are made from that buffer afterwards. A batch
 * ends early once it has copied 64 MiB.
 *
 * systemd-python does not export its sd_journal pointer; its _Reader object
 * is { PyObject_HEAD; sd_journal *j; } (systemd/_reader.c, unchanged since
 * 2013). The type is checked by name and size before the pointer is used.
 *
 * State kept between calls: a cache of field-name strings (with the GIL).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>

typedef struct {
    PyObject_HEAD
    sd_journal *j;
} ReaderObject;

enum core { NOT_CORE = 0, C_MESSAGE, C_PRIORITY, C_PID, C_HOSTNAME, C_IDENT, C_FACILITY,
            C_RESERVED };

/* -- field names ---------------------------------------------------------------- */

#define NAME_SLOTS 512
#define NAME_MAX_LEN 64  /* journald's longest field name */

typedef struct {
    size_t len;
    char name[NAME_MAX_LEN];
    PyObject *str;  /* strong reference, kept for the life of the process */
    enum core core;
} NameSlot;

static NameSlot names[NAME_SLOTS];
static int names_used = 0;

static enum core classify(const char *name, size_t len) {
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
    if (IS("MESSAGE")) return C_MESSAGE;
    if (IS("PRIORITY")) return C_PRIORITY;
    if (IS("_PID")) return C_PID;
    if (IS("_HOSTNAME")) return C_HOSTNAME;
    if (IS("SYSLOG_IDENTIFIER")) return C_IDENT;
    if (IS("SYSLOG_FACILITY")) return C_FACILITY;
#undef IS
    if ((len >= 2 && memcmp(name, "__", 2) == 0) || (len >= 9 && memcmp(name, "_HOSTLOG_", 9) == 0))
        return C_RESERVED;
    return NOT_CORE;
}

/* The slot of a name; -1 (and *core set) when the cache cannot hold it.
 * `hint` is where the previous field's slot was: entries list their
 * fields in much the same order, so the next slot is usually the one. */
static int name_slot(const char *name, size_t len, int hint, enum core *core) {
    int i;
    if (hint + 1 < names_used && names[hint + 1].len == len
            && memcmp(names[hint + 1].name, name, len) == 0)
        return hint + 1;
    for (i = 0; i < names_used; i++)
        if (names[i].len == len && memcmp(names[i].name, name, len) == 0)
            return i;
    *core = classify(name, len);
    if (len > NAME_MAX_LEN || names_used == NAME_SLOTS)
        return -1;
    PyObject *str = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, NULL);
    if (str == NULL) {
        PyErr_Clear();
        return -1;
    }
    PyUnicode_InternInPlace(&str);
    i = names_used++;
    names[i].len = len;
    memcpy(names[i].name, name, len);
    names[i].str = str;
    names[i].core = *core;
    return i;
}

/* -- values --------------------------------------------------------------------- */

/* A canonical unsigned number ("0" or no leading zero, at most 19 digits). */
static int canonical_uint(const char *s, size_t len, unsigned long long *out) {
    unsigned long long v = 0;
    size_t i;
    if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
        return 0;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    *out = v;
    return 1;
}

/* -- phase 1: libsystemd's data, copied without the GIL ------------------------- */

/* One batch as read from the journal: per entry an EntryHead, then per
 * field a size_t length and the field's bytes ("NAME=value"). */
typedef struct {
    uint64_t realtime, monotonic;
    int status;       /* < 0: libsystemd could not read the entry (-errno) */
    size_t nfields;
} EntryHead;

typedef struct {
    char *buf;
    size_t len, cap;
} Arena;

/* Bytes a batch may copy before it ends early (a few fields near
 * data_threshold): what a batch holds stays bounded. */
#define ARENA_MAX ((size_t)64 << 20)

static int arena_put(Arena *a, const void *data, size_t len) {
    if (a->len + len > a->cap) {
        size_t cap = a->cap ? a->cap : (size_t)1 << 20;
        while (cap < a->len + len)
            cap *= 2;
        char *buf = realloc(a->buf, cap);
        if (buf == NULL)
            return -1;
        a->buf = buf;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, data, len);
    a->len += len;
    return 0;
}

/* Reads up to `limit` entries into the arena; returns how many, -1 when out
 * of memory. *stop is set when sd_journal_next failed. */
static Py_ssize_t read_raw(sd_journal *j, Py_ssize_t limit, Arena *a, int *stop) {
    Py_ssize_t count = 0;
    while (count < limit && a->len < ARENA_MAX) {
        int r = sd_journal_next(j);
        if (r == 0)
            break;
        if (r < 0) {
            *stop = r;
            break;
        }
        size_t at = a->len;
        EntryHead head = {0, 0, 0, 0};
        sd_id128_t boot;
        if (arena_put(a, &head, sizeof(head)) < 0)
            return -1;
        r = sd_journal_get_realtime_usec(j, &head.realtime);
        if (r >= 0)
            r = sd_journal_get_monotonic_usec(j, &head.monotonic, &boot);
        if (r >= 0) {
            const void *data;
            size_t len;
            sd_journal_restart_data(j);
            while ((r = sd_journal_enumerate_data(j, &data, &len)) > 0) {
                if (arena_put(a, &len, sizeof(len)) < 0 || arena_put(a, data, len) < 0)
                    return -1;
                head.nfields++;
            }
        }
        if (r < 0) {  /* the entry is skipped: keep only its head */
            a->len = at + sizeof(head);
            head.status = r;
            head.nfields = 0;
        }
        memcpy(a->buf + at, &head, sizeof(head));
        count++;
    }
    return count;
}

/* -- phase 2: objects, with the GIL ---------------------------------------------- */

typedef struct {
    const char *data;
    size_t len;
} Field;

/* The next field at *pos of the arena. */
static Field next_field(const char *buf, size_t *pos) {
    Field f;
    memcpy(&f.len, buf + *pos, sizeof(f.len));
    f.data = buf + *pos + sizeof(f.len);
    *pos += sizeof(f.len) + f.len;
    return f;
}

/* The entry as Reader._get_all gives it; NULL with an exception set. */
static PyObject *raw_entry(const char *buf, size_t pos, size_t nfields) {
    size_t i;
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (i = 0; i < nfields; i++) {
        Field f = next_field(buf, &pos);
        const char *eq = memchr(f.data, '=', f.len);
        if (eq == NULL) {  /* Reader._get_all refuses the entry too */
            Py_DECREF(dict);
            PyErr_SetString(PyExc_OSError, "journal gave us a field without '='");
            return NULL;
        }
        PyObject *key = PyUnicode_DecodeUTF8(f.data, eq - f.data, NULL);
        PyObject *value = PyBytes_FromStringAndSize(eq + 1, f.data + f.len - (eq + 1));
        if (key == NULL || value == NULL) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(dict);
            return NULL;
        }
        PyObject *cur = PyDict_GetItemWithError(dict, key);
        int bad;
        if (cur == NULL) {
            bad = PyErr_Occurred() != NULL || PyDict_SetItem(dict, key, value) < 0;
        } else if (PyList_CheckExact(cur)) {
            bad = PyList_Append(cur, value) < 0;
        } else {
            PyObject *list = PyList_New(2);
            bad = list == NULL;
            if (!bad) {
                Py_INCREF(cur);
                PyList_SET_ITEM(list, 0, cur);
                Py_INCREF(value);
                PyList_SET_ITEM(list, 1, value);
                bad = PyDict_SetItem(dict, key, list) < 0;
                Py_DECREF(list);
            }
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (bad) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

typedef struct {
    PyObject *host, *app, *pid, *severity, *facility, *msg, *fields;
} Row;

static void row_clear(Row *row) {
    Py_CLEAR(row->host);
    Py_CLEAR(row->app);
    Py_CLEAR(row->pid);
    Py_CLEAR(row->severity);
    Py_CLEAR(row->facility);
    Py_CLEAR(row->msg);
    Py_CLEAR(row->fields);
}

/* 1: mapped into *row; 0: not the common shape (row cleared); -1: a Python
 * error (out of memory). */
static int map_entry(const char *buf, size_t pos, size_t nfields, uint64_t monotonic,
                     PyObject *hostname, Row *row) {
    static PyObject *mono_key = NULL;
    size_t i;
    int hint = -1;
    unsigned seen = 0;
    memset(row, 0, sizeof(*row));
    row->fields = PyDict_New();
    if (row->fields == NULL)
        return -1;
    for (i = 0; i < nfields; i++) {
        Field f = next_field(buf, &pos);
        const char *eq = memchr(f.data, '=', f.len);
        if (eq == NULL)
            goto other;
        size_t name_len = (size_t)(eq - f.data);
        const char *value = eq + 1;
        size_t value_len = f.len - name_len - 1;
        enum core core = NOT_CORE;
        int slot = name_slot(f.data, name_len, hint, &core);
        if (slot < 0)
            goto other;
        hint = slot;
        core = names[slot].core;
        if (core == C_RESERVED)
            goto other;
        if (core != NOT_CORE) {
            if (seen & (1u << core))
                goto other;  /* a repeated core field */
            seen |= 1u << core;
        }
        unsigned long long number;
        switch (core) {
        case C_PRIORITY:
            if (value_len != 1 || value[0] < '0' || value[0] > '7')
                goto other;
            row->severity = PyLong_FromLong(value[0] - '0');
            if (row->severity == NULL)
                goto fail;
            continue;
        case C_PID:
            if (!canonical_uint(value, value_len, &number))
                goto other;
            row->pid = PyLong_FromUnsignedLongLong(number);
            if (row->pid == NULL)
                goto fail;
            continue;
        case C_FACILITY:
            if (!canonical_uint(value, value_len, &number) || number > 23)
                goto other;
            row->facility = PyLong_FromUnsignedLongLong(number);
            if (row->facility == NULL)
                goto fail;
            continue;
        default:
            break;
        }
        PyObject *text = PyUnicode_DecodeUTF8(value, (Py_ssize_t)value_len, NULL);
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                goto fail;
            PyErr_Clear();
            goto other;
        }
        switch (core) {
        case C_MESSAGE:
            row->msg = text;
            continue;
        case C_HOSTNAME:
        case C_IDENT:
            if (value_len == 0) {
                Py_DECREF(text);
                goto other;
            }
            if (core == C_HOSTNAME)
                row->host = text;
            else
                row->app = text;
            continue;
        default:
            break;
        }
        Py_ssize_t before = PyDict_GET_SIZE(row->fields);
        int bad = PyDict_SetItem(row->fields, names[slot].str, text) < 0;
        Py_DECREF(text);
        if (bad)
            goto fail;
        if (PyDict_GET_SIZE(row->fields) == before)
            goto other;  /* a repeated field: a list in journal_to_record */
    }
    if (row->msg == NULL || row->app == NULL || row->severity == NULL)
        goto other;  /* journal_to_record marks them absent or takes _COMM */
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)monotonic);
    PyObject *mono = PyUnicode_FromStringAndSize(digits, n);
    if (mono_key == NULL)
        mono_key = PyUnicode_InternFromString("__MONOTONIC_TIMESTAMP");
    if (mono == NULL || mono_key == NULL || PyDict_SetItem(row->fields, mono_key, mono) < 0) {
        Py_XDECREF(mono);
        goto fail;
    }
    Py_DECREF(mono);
    if (row->host == NULL) {
        Py_INCREF(hostname);
        row->host = hostname;
    }
    if (row->pid == NULL) {
        Py_INCREF(Py_None);
        row->pid = Py_None;
    }
    if (row->facility == NULL) {
        Py_INCREF(Py_None);
        row->facility = Py_None;
    }
    return 1;
other:
    row_clear(row);
    return 0;
fail:
    row_clear(row);
    return -1;
}

/* -- the batch ------------------------------------------------------------------ */

static sd_journal *reader_journal(PyObject *reader) {
    PyTypeObject *type = Py_TYPE(reader);
    for (; type != NULL; type = type->tp_base) {
        if (strcmp(type->tp_name, "_reader._Reader") == 0
                || strcmp(type->tp_name, "systemd._reader._Reader") == 0)
            break;
    }
    if (type == NULL || type->tp_basicsize != (Py_ssize_t)sizeof(ReaderObject)) {
        PyErr_SetString(PyExc_TypeError, "read_batch wants a systemd.journal reader");
        return NULL;
    }
    sd_journal *j = ((ReaderObject *)reader)->j;
    if (j == NULL)
        PyErr_SetString(PyExc_ValueError, "the journal reader is closed");
    return j;
}

static PyObject *error_text(int r) {
    return PyUnicode_FromString(strerror(-r));
}

static PyObject *read_batch(PyObject *self, PyObject *args) {
    PyObject *reader, *hostname;
    Py_ssize_t limit;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnU:read_batch", &reader, &limit, &hostname))
        return NULL;
    sd_journal *j = reader_journal(reader);
    if (j == NULL)
        return NULL;
    Arena arena = {NULL, 0, 0};
    int stop = 0;
    Py_ssize_t count;
    /* libsystemd's part runs without the GIL: the spool writer's thread
     * encodes meanwhile. The caller uses the reader from one thread only. */
    Py_BEGIN_ALLOW_THREADS
    count = read_raw(j, limit, &arena, &stop);
    Py_END_ALLOW_THREADS
    if (count < 0) {
        free(arena.buf);
        return PyErr_NoMemory();
    }
    PyObject *cols[8];
    PyObject *redo = PyList_New(0);
    PyObject *skip_error = NULL, *stop_error = NULL;
    Py_ssize_t skipped = 0, n = 0, e;
    size_t pos = 0;
    int k;
    for (k = 0; k < 8; k++)
        cols[k] = PyList_New(0);
    if (redo == NULL)
        goto fail;
    for (k = 0; k < 8; k++)
        if (cols[k] == NULL)
            goto fail;
    if (stop < 0) {  /* cannot step past it now; the next read tries again */
        stop_error = error_text(stop);
        if (stop_error == NULL)
            goto fail;
    }
    for (e = 0; e < count; e++) {
        EntryHead head;
        memcpy(&head, arena.buf + pos, sizeof(head));
        pos += sizeof(head);
        size_t fields_at = pos;
        for (size_t i = 0; i < head.nfields; i++)
            next_field(arena.buf, &pos);
        int err = head.status, mapped = -2;
        Row row;
        if (err >= 0) {
            mapped = map_entry(arena.buf, fields_at, head.nfields, head.monotonic, hostname, &row);
            if (mapped == -1)
                goto fail;
        }
        PyObject *raw = NULL;
        if (mapped == 0) {
            raw = raw_entry(arena.buf, fields_at, head.nfields);
            if (raw == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_OSError)
                        && !PyErr_ExceptionMatches(PyExc_UnicodeError))
                    goto fail;
                PyErr_Clear();
                mapped = -2;
                err = -EBADMSG;
            }
        }
        if (mapped == -2) {  /* a corrupt entry: skipped, as journalctl does */
            skipped++;
            Py_XSETREF(skip_error, error_text(err));
            if (skip_error == NULL)
                goto fail;
            continue;
        }
        PyObject *ts = PyLong_FromUnsignedLongLong((unsigned long long)head.realtime * 1000ULL);
        if (ts == NULL) {
            Py_XDECREF(raw);
            if (mapped == 1)
                row_clear(&row);
            goto fail;
        }
        if (mapped == 0) {
            PyObject *item = Py_BuildValue("(nNKK)", n, raw, (unsigned long long)head.realtime,
                                           (unsigned long long)head.monotonic);
            if (item == NULL || PyList_Append(redo, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(ts);
                goto fail;
            }
            Py_DECREF(item);
            memset(&row, 0, sizeof(row));
        }
        PyObject *values[8] = {ts, row.host, row.app, row.pid, row.severity, row.facility,
                               row.msg, row.fields};
        int bad = 0;
        for (k = 0; k < 8; k++) {
            PyObject *v = values[k] != NULL ? values[k] : Py_None;
            if (!bad && PyList_Append(cols[k], v) < 0)
                bad = 1;
            Py_XDECREF(values[k]);
        }
        if (bad)
            goto fail;
        n++;
    }
    free(arena.buf);
    PyObject *out = Py_BuildValue("(NNNNNNNNNnOO)", cols[0], cols[1], cols[2], cols[3], cols[4],
                                  cols[5], cols[6], cols[7], redo, skipped,
                                  skip_error ? skip_error : Py_None,
                                  stop_error ? stop_error : Py_None);
    Py_XDECREF(skip_error);
    Py_XDECREF(stop_error);
    return out;
fail:
    free(arena.buf);
    for (k = 0; k < 8; k++)
        Py_XDECREF(cols[k]);
    Py_XDECREF(redo);
    Py_XDECREF(skip_error);
    Py_XDECREF(stop_error);
    return NULL;
}

static PyMethodDef methods[] = {
    {"read_batch", read_batch, METH_VARARGS,
     "read_batch(reader, limit, hostname) -> (ts, host, app, pid, severity, facility, msg, "
     "fields, redo, skipped, skip_error, stop_error)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_journald_read",
    "journal entries to columns (the journald collector's hot path)", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__journald_read(void) {
    return PyModule_Create(&module);
}
