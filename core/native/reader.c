/* Reader: incremental capture-file parser (Python type).
 *
 * feed() parses whole records straight out of the caller's buffer with the GIL released and
 * writes them into the open batch's bytes object; only an incomplete unit at the end of a
 * feed (plus, for classic pcap, the record before it, kept for backtracking after damage)
 * is copied into the internal tail. */
#include "reader.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>


#define PW_MAX_BATCH ((size_t)1 << 30) /* records bytes per batch (rec_off is u32) */

/* ---- messages --------------------------------------------------------------------------- */
static char *vfmt(const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    size_t len = n < 0 ? 0 : ((size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, buf, len);
        s[len] = 0;
    }
    return s;
}

void pw_msg_add(pw_msgs *ms, uint64_t off, const char *fmt, ...)
{
    if (ms->n >= PW_MAX_MESSAGES) {
        ms->dropped++;
        return;
    }
    if (ms->n == ms->cap) {
        size_t nc = ms->cap ? ms->cap * 2 : 8;
        pw_msg *v = realloc(ms->v, nc * sizeof(pw_msg));
        if (!v) {
            ms->dropped++;
            return;
        }
        ms->v = v;
        ms->cap = nc;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = vfmt(fmt, ap);
    va_end(ap);
    if (!s) {
        ms->dropped++;
        return;
    }
    ms->v[ms->n].off = off;
    ms->v[ms->n].msg = s;
    ms->n++;
}

void pw_msg_append(pw_msgs *ms, size_t idx, const char *fmt, ...)
{
    if (idx >= ms->n)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *extra = vfmt(fmt, ap);
    va_end(ap);
    if (!extra)
        return;
    size_t a = strlen(ms->v[idx].msg), b = strlen(extra);
    char *s = realloc(ms->v[idx].msg, a + b + 1);
    if (s) {
        memcpy(s + a, extra, b + 1);
        ms->v[idx].msg = s;
    }
    free(extra);
}

static void msgs_free(pw_msgs *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        free(ms->v[i].msg);
    free(ms->v);
    memset(ms, 0, sizeof *ms);
}

void pw_warn_count(PwReader *r, int kind, uint64_t off)
{
    if (r->wcount[kind]++ == 0)
        r->wfirst[kind] = off;
}

void pw_start_resync(PwReader *r, uint64_t off, int eof_truncation)
{
    r->resync = 1;
    r->damage_off = off;
    r->resync_at_eof_truncation = eof_truncation;
    /* the error just recorded for this damage, if it was kept */
    r->damage_msg = (r->errors.n && r->errors.v[r->errors.n - 1].off == off) ? r->errors.n - 1
                                                                              : SIZE_MAX;
}

void pw_end_resync(PwReader *r, uint64_t at, int found)
{
    r->resync = 0;
    if (at >= r->damage_off)
        r->bytes_skipped += at - r->damage_off;
    if (r->damage_msg == SIZE_MAX)
        return;
    if (found && at >= r->damage_off)
        pw_msg_append(&r->errors, r->damage_msg,
                      "; resynchronised at byte %llu after skipping %llu bytes",
                      (unsigned long long)at, (unsigned long long)(at - r->damage_off));
    else if (found)
        pw_msg_append(&r->errors, r->damage_msg,
                      "; resynchronised at byte %llu, %llu bytes before the damaged header (the "
                      "previous record's length was wrong; those bytes are in both records)",
                      (unsigned long long)at, (unsigned long long)(r->damage_off - at));
    else if (!r->resync_at_eof_truncation)
        pw_msg_append(&r->errors, r->damage_msg,
                      "; no valid record in the remaining %llu bytes",
                      (unsigned long long)(at - r->damage_off));
}

/* ---- emitting packets into the open batch (no GIL) -------------------------------------- */
/* The meta of one stored record (data = its caplen bytes). Shared with the live capture
 * (capture_ring.c), so both index a record identically. */
void pw_record_meta(pw_meta *m, int lclass, uint32_t snap, int prec, uint32_t rec_off,
                    uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t origlen,
                    const uint8_t *data)
{
    memset(m, 0, sizeof *m);
    m->ts_ns = (int64_t)sec * 1000000000LL + (prec == 6 ? (int64_t)frac * 1000 : (int64_t)frac);
    m->rec_off = rec_off;
    m->caplen = caplen;
    m->origlen = origlen;
    uint32_t dl = caplen;
    if (caplen > snap) { /* libpcap presents only the first snaplen bytes */
        dl = snap;
        m->flags = PW_F_CAPLEN_GT_SNAPLEN;
    }
    pw_dissect(lclass, data, dl, m);
}

int pw_emit(PwReader *r, uint32_t lt, uint32_t snap, int prec, int lclass, uint64_t in_off,
            uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t origlen, const uint8_t *data)
{
    if (r->skip) {
        r->skip--;
        return EM_OK;
    }
    if (r->meta_n && (lt != r->b_lt || snap != r->b_snap || prec != r->b_prec))
        return EM_BREAK;
    size_t rl = 16 + (size_t)caplen;
    if (r->meta_n && r->max_batch && r->out_len + rl > r->max_batch)
        return EM_BREAK;
    if (!r->outp || rl > r->out_cap - r->out_len) {
        if (r->meta_n == 0)
            r->need_cap = rl; /* reopen with room for it */
        return EM_BREAK;
    }
    if (r->meta_n == r->meta_cap) {
        size_t nc = r->meta_cap ? r->meta_cap * 2 : 4096;
        uint8_t *v = realloc(r->meta, nc * sizeof(pw_meta));
        if (!v)
            return EM_NOMEM;
        r->meta = v;
        r->meta_cap = nc;
    }
    if (r->meta_n == 0) {
        r->b_lt = lt;
        r->b_snap = snap;
        r->b_prec = prec;
        r->b_first_off = in_off;
    }
    pw_record_meta((pw_meta *)(r->meta + r->meta_n * sizeof(pw_meta)), lclass, snap, prec,
                   (uint32_t)r->out_len, sec, frac, caplen, origlen, data);
    uint8_t *o = r->outp + r->out_len;
    pw_wr32(o, sec);
    pw_wr32(o + 4, frac);
    pw_wr32(o + 8, caplen);
    pw_wr32(o + 12, origlen);
    memcpy(o + 16, data, caplen);
    r->out_len += rl;
    r->meta_n++;
    r->packets++;
    return EM_OK;
}

/* ---- driving the parsers over tail + data (no GIL) -------------------------------------- */
static size_t parse_any(PwReader *r, const uint8_t *b, size_t n, int final, int *st)
{
    *st = ST_OK;
    size_t h = 0;
    if (r->format == FMT_NONE) {
        h = pw_parse_pcap_header(r, b, n, final);
        if (r->format == FMT_NONE || r->format == FMT_INVALID)
            return h;
    }
    if (r->format == FMT_INVALID)
        return n;
    r->consumed += h;
    size_t c = r->format == FMT_PCAP ? pw_parse_pcap(r, b + h, n - h, final, st)
                                     : pw_parse_pcapng(r, b + h, n - h, final, st);
    r->consumed -= h;
    return h + c;
}

static int tail_reserve(PwReader *r, size_t need)
{
    if (need <= r->tail_cap)
        return 1;
    size_t nc = r->tail_cap ? r->tail_cap : 65536;
    while (nc < need)
        nc *= 2;
    uint8_t *t = realloc(r->tail, nc);
    if (!t)
        return 0;
    r->tail = t;
    r->tail_cap = nc;
    return 1;
}

static int drive(PwReader *r, const uint8_t *data, size_t len, int final)
{
    int st = ST_OK;
    for (;;) {
        if (r->tail_len > 0) {
            if (r->want > r->tail_len && r->feed_pos < len) {
                size_t take = r->want - r->tail_len;
                if (take > len - r->feed_pos)
                    take = len - r->feed_pos;
                if (!tail_reserve(r, r->tail_len + take))
                    return ST_NOMEM;
                memcpy(r->tail + r->tail_len, data + r->feed_pos, take);
                r->tail_len += take;
                r->feed_pos += take;
                r->tail_from_data += take;
            }
            int fin = final && r->feed_pos == len;
            if (r->tail_len < r->want && !fin)
                return ST_OK; /* everything is in the tail; wait for more input */
            size_t c = parse_any(r, r->tail, r->tail_len, fin, &st);
            if (c > r->tail_len)
                c = r->tail_len;
            memmove(r->tail, r->tail + c, r->tail_len - c);
            r->tail_len -= c;
            r->consumed += c;
            if (r->tail_from_data > r->tail_len)
                r->tail_from_data = r->tail_len;
            if (st != ST_OK)
                return st;
            if (c == 0 && !fin && r->want <= r->tail_len)
                r->want = r->tail_len + 1; /* defensive: never spin without progress */
            if (fin) {
                r->tail_len = 0;
                r->hold = 0;
                return ST_OK;
            }
            if (r->tail_len == r->hold && r->hold <= r->tail_from_data) {
                /* the rest of the tail is a copy of the data just before feed_pos: go on
                 * parsing in place */
                r->feed_pos -= r->tail_len;
                r->tail_len = 0;
                r->tail_from_data = 0;
            } else if (r->tail_len >= r->want) {
                continue;
            } else if (r->feed_pos == len) {
                return ST_OK;
            }
            continue;
        }
        if (r->feed_pos >= len && !final)
            return ST_OK;
        size_t pos = r->feed_pos;
        const uint8_t *b = pos < len ? data + pos : (const uint8_t *)"";
        size_t c = parse_any(r, b, len - pos, final, &st);
        if (c > len - pos)
            c = len - pos;
        r->feed_pos = pos + c;
        r->consumed += c;
        if (st != ST_OK)
            return st;
        size_t left = len - r->feed_pos;
        if (final || left == 0) {
            r->feed_pos = len;
            if (final)
                r->hold = 0;
            return ST_OK;
        }
        if (!tail_reserve(r, left))
            return ST_NOMEM;
        memcpy(r->tail, data + r->feed_pos, left);
        r->tail_len = left;
        r->tail_from_data = left;
        r->feed_pos = len;
        return ST_OK;
    }
}

/* ---- batches (GIL held) ----------------------------------------------------------------- */
/* Records objects are big (a feed's worth) and short-lived: the caller writes them to a
 * segment and drops them. Allocating a fresh one per feed makes malloc map fresh pages
 * (glibc's mmap/trim thresholds), and the page faults cost more than parsing. So the
 * Reader keeps its last few records objects and, when the caller has dropped one (refcount
 * 1: nobody else can see it), refills it instead of allocating. */
#define POOL_N 4

static int open_batch(PwReader *r, size_t cap)
{
    if (r->max_batch && cap > r->max_batch)
        cap = r->max_batch;
    if (cap > PW_MAX_BATCH)
        cap = PW_MAX_BATCH;
    if (cap < r->need_cap)
        cap = r->need_cap;
    r->need_cap = 0;
    for (int i = 0; i < POOL_N; i++) {
        PyObject *o = r->pool[i];
        if (o && Py_REFCNT(o) == 1 && r->pool_cap[i] >= cap) {
            r->pool[i] = NULL;
            r->out = o;
            r->out_cap = r->pool_cap[i];
            goto ready;
        }
    }
    /* headroom, so that the next feed (whose tail may be a little longer) can reuse it */
    if (cap > 65536 && cap < PW_MAX_BATCH)
        cap = (cap + cap / 16 + 65535) & ~(size_t)65535;
    r->out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (!r->out)
        return -1;
    r->out_cap = cap;
ready:
    r->outp = (uint8_t *)PyBytes_AS_STRING(r->out);
    r->out_len = 0;
    r->meta_n = 0;
    return 0;
}

static void pool_put(PwReader *r, PyObject *o, size_t cap)
{
    int slot = 0;
    for (int i = 0; i < POOL_N; i++) {
        if (!r->pool[i]) {
            slot = i;
            break;
        }
        if (r->pool_cap[i] < r->pool_cap[slot])
            slot = i;
    }
    Py_XDECREF(r->pool[slot]);
    Py_INCREF(o);
    r->pool[slot] = o;
    r->pool_cap[slot] = cap;
}

static void pool_clear(PwReader *r)
{
    for (int i = 0; i < POOL_N; i++)
        Py_CLEAR(r->pool[i]);
}

static int flush_batch(PwReader *r, PyObject *list)
{
    if (!r->out)
        return 0;
    if (r->meta_n == 0) {
        Py_CLEAR(r->out);
        r->outp = NULL;
        return 0;
    }
    PyObject *meta = PyBytes_FromStringAndSize((const char *)r->meta,
                                               (Py_ssize_t)(r->meta_n * sizeof(pw_meta)));
    r->meta_n = 0;
    r->outp = NULL;
    if (!meta) {
        Py_CLEAR(r->out);
        return -1;
    }
    if (r->out_len < r->out_cap / 2) {
        if (_PyBytes_Resize(&r->out, (Py_ssize_t)r->out_len) < 0) {
            r->out = NULL;
            Py_DECREF(meta);
            return -1;
        }
    } else {
        /* shrink in place (nobody else holds it; the allocation size is never consulted
         * again) and keep it for recycling */
        Py_SET_SIZE(r->out, (Py_ssize_t)r->out_len);
        PyBytes_AS_STRING(r->out)[r->out_len] = '\0';
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        ((PyBytesObject *)r->out)->ob_shash = -1; /* the caller may have hashed it */
#pragma GCC diagnostic pop
        pool_put(r, r->out, r->out_cap);
    }
    PyObject *t = Py_BuildValue("(IIiNNK)", r->b_lt, r->b_snap, r->b_prec, r->out, meta,
                                (unsigned long long)r->b_first_off);
    r->out = NULL;
    if (!t)
        return -1;
    int rc = PyList_Append(list, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *run(PwReader *r, const uint8_t *data, size_t len, int final)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    r->feed_pos = 0;
    r->tail_from_data = 0;
    r->total_in += len;
    for (;;) {
        if (!r->out && open_batch(r, r->tail_len + (len - r->feed_pos)) < 0)
            goto fail;
        int st;
        Py_BEGIN_ALLOW_THREADS
        st = drive(r, data, len, final);
        Py_END_ALLOW_THREADS
        if (st == ST_NOMEM) {
            PyErr_NoMemory();
            goto fail;
        }
        if (st == ST_BREAK) {
            if (flush_batch(r, list) < 0)
                goto fail;
            continue;
        }
        break;
    }
    if (flush_batch(r, list) < 0)
        goto fail;
    return list;
fail:
    Py_CLEAR(r->out);
    r->outp = NULL;
    r->meta_n = 0;
    Py_DECREF(list);
    return NULL;
}

/* ---- Python type ------------------------------------------------------------------------ */
static int Reader_init(PwReader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "skip_packets", "max_batch_bytes", NULL};
    PyObject *name;
    long long skip = 0, max_batch = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|LL", kwlist, &name, &skip, &max_batch))
        return -1;
    if (skip < 0 || max_batch < 0) {
        PyErr_SetString(PyExc_ValueError, "skip_packets and max_batch_bytes must be >= 0");
        return -1;
    }
    if (self->name) {
        PyErr_SetString(PyExc_RuntimeError, "Reader.__init__ called twice");
        return -1;
    }
    Py_INCREF(name);
    self->name = name;
    self->skip = (uint64_t)skip;
    self->max_batch = (size_t)max_batch;
    self->max_block = PW_MAX_PCAPNG_BLOCK;
    self->want = 4;
    self->damage_msg = SIZE_MAX;
    return 0;
}

static void Reader_dealloc(PwReader *self)
{
    Py_XDECREF(self->name);
    Py_XDECREF(self->out);
    pool_clear(self);
    free(self->tail);
    free(self->meta);
    free(self->ifs);
    msgs_free(&self->errors);
    msgs_free(&self->warnings);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_usable(PwReader *self, const char *what)
{
    if (!self->name) {
        PyErr_SetString(PyExc_RuntimeError, "Reader not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "Reader for %U: %s() while another call is running",
                     self->name, what);
        return -1;
    }
    if (self->finished) {
        PyErr_Format(PyExc_ValueError, "Reader for %U: %s() after finish()", self->name, what);
        return -1;
    }
    return 0;
}

static PyObject *Reader_feed(PwReader *self, PyObject *arg)
{
    if (check_usable(self, "feed") < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    self->busy = 1;
    PyObject *res = run(self, view.buf, (size_t)view.len, 0);
    self->busy = 0;
    PyBuffer_Release(&view);
    return res;
}

static PyObject *Reader_finish(PwReader *self, PyObject *Py_UNUSED(ignored))
{
    if (self->finished)
        return PyList_New(0);
    if (check_usable(self, "finish") < 0)
        return NULL;
    self->busy = 1;
    PyObject *res = run(self, (const uint8_t *)"", 0, 1);
    self->busy = 0;
    self->finished = 1;
    pool_clear(self);
    free(self->tail);
    self->tail = NULL;
    self->tail_len = self->tail_cap = 0;
    return res;
}

static PyObject *msgs_list(const pw_msgs *ms, const char *what)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (size_t i = 0; i < ms->n; i++) {
        PyObject *t = Py_BuildValue("(Ks)", (unsigned long long)ms->v[i].off, ms->v[i].msg);
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    if (ms->dropped) {
        PyObject *s = PyUnicode_FromFormat("%llu more %s not listed (limit MAX_MESSAGES=%d)",
                                           (unsigned long long)ms->dropped, what,
                                           PW_MAX_MESSAGES);
        PyObject *t = s ? Py_BuildValue("(iN)", -1, s) : NULL;
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

static PyObject *Reader_get_errors(PwReader *self, void *c)
{
    (void)c;
    return msgs_list(&self->errors, "errors");
}

static const char *const WARN_TEXT[W_COUNT] = {
    "record(s) with a captured length greater than the snapshot length; kept as captured "
    "(queries return them cut to the snapshot length, as libpcap reads them)",
    "record(s) with a captured length greater than the original length; kept as captured",
    "record(s) with a timestamp fraction of a second out of range; kept as captured",
    "packet(s) with a timestamp outside the 32-bit seconds of classic pcap; stored modulo 2^32 "
    "like libpcap",
};

static PyObject *Reader_get_warnings(PwReader *self, void *c)
{
    (void)c;
    PyObject *list = msgs_list(&self->warnings, "warnings");
    if (!list)
        return NULL;
    for (int k = 0; k < W_COUNT; k++) {
        if (!self->wcount[k])
            continue;
        PyObject *t = Py_BuildValue("(KN)", (unsigned long long)self->wfirst[k],
                                    PyUnicode_FromFormat("%llu %s (first at byte %llu)",
                                                         (unsigned long long)self->wcount[k],
                                                         WARN_TEXT[k],
                                                         (unsigned long long)self->wfirst[k]));
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

static PyObject *Reader_get_format(PwReader *self, void *c)
{
    (void)c;
    if (self->format == FMT_PCAP)
        return PyUnicode_FromString("pcap");
    if (self->format == FMT_PCAPNG)
        return PyUnicode_FromString("pcapng");
    Py_RETURN_NONE;
}

static PyObject *Reader_get_packets(PwReader *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->packets);
}

static PyObject *Reader_get_offset(PwReader *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->consumed + self->hold);
}

static PyObject *Reader_get_skipped(PwReader *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->bytes_skipped);
}

static PyObject *Reader_get_name(PwReader *self, void *c)
{
    (void)c;
    if (!self->name)
        Py_RETURN_NONE;
    Py_INCREF(self->name);
    return self->name;
}

static PyMethodDef Reader_methods[] = {
    {"feed", (PyCFunction)Reader_feed, METH_O,
     "feed(data) -> list[Batch]: parse the next piece of the capture (any bytes-like)."},
    {"finish", (PyCFunction)Reader_finish, METH_NOARGS,
     "finish() -> list[Batch]: end of input; reports a truncated trailing record or block."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"format", (getter)Reader_get_format, NULL, "'pcap', 'pcapng', or None", NULL},
    {"packets", (getter)Reader_get_packets, NULL, "records emitted (skipped ones excluded)", NULL},
    {"offset", (getter)Reader_get_offset, NULL, "input bytes consumed", NULL},
    {"errors", (getter)Reader_get_errors, NULL, "list of (input byte offset, message)", NULL},
    {"warnings", (getter)Reader_get_warnings, NULL, "list of (input byte offset, message)", NULL},
    {"bytes_skipped", (getter)Reader_get_skipped, NULL, "input bytes skipped by resyncs", NULL},
    {"name", (getter)Reader_get_name, NULL, "name used in exception messages", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PwReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pcapwire._native.Reader",
    .tp_basicsize = sizeof(PwReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reader(name, skip_packets=0, max_batch_bytes=0): incremental pcap/pcapng\n"
              "parser. skip_packets drops the first N packets (resume); max_batch_bytes > 0\n"
              "caps the records bytes of one batch (a bigger single record still fits).\n\n"
              "feed(data) and finish() return batches (linktype, snaplen, tsprec, records, meta,\n"
              "first_input_offset); records are little-endian classic pcap records, meta one\n"
              "META_STRUCT per record. See core/native/README.md.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};
