/* Filter (a BPF program compiled by libpcap) and scan() over the records of one segment.
 *
 * scan() emits records as `tcpdump -r SEGMENT -w -` writes them: microsecond timestamps
 * (nanoseconds truncated, as libpcap 1.10 scales down), and a caplen larger than the
 * segment's snaplen cut to snaplen (sf-pcap.c reads snaplen bytes and discards the rest). */
#include "pcapwire_native.h" /* Python.h first: it sets the feature macros pcap.h needs */

#include <pcap/pcap.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* one libpcap compile at a time in this process (see Filter_init) */
static pthread_mutex_t compile_lock = PTHREAD_MUTEX_INITIALIZER;

/* tcpdump compiles with netmask 0 when reading a file (so "ip broadcast" works there);
 * PCAP_NETMASK_UNKNOWN would reject it. Same netmask, same programs. */
#define PW_BPF_NETMASK 0u

int pw_bpf_compile(int dlt, int snaplen, const char *expr, struct bpf_program *prog,
                   char *err, size_t errlen)
{
    pcap_t *p = pcap_open_dead(dlt, snaplen);
    if (!p) {
        snprintf(err, errlen, "pcap_open_dead: out of memory");
        return -1;
    }
    pthread_mutex_lock(&compile_lock);
    int rc = pcap_compile(p, prog, expr, 1, PW_BPF_NETMASK);
    if (rc < 0)
        snprintf(err, errlen, "%s", pcap_geterr(p));
    pthread_mutex_unlock(&compile_lock);
    pcap_close(p);
    return rc < 0 ? -1 : 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *expr;
    int linktype, snaplen, match_all, compiled;
    struct bpf_program prog;
} PwFilter;

static int Filter_init(PwFilter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"expr", "linktype", "snaplen", NULL};
    PyObject *expr;
    int linktype, snaplen;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Uii", kwlist, &expr, &linktype, &snaplen))
        return -1;
    if (self->expr) {
        PyErr_SetString(PyExc_RuntimeError, "Filter.__init__ called twice");
        return -1;
    }
    if (linktype < 0 || snaplen <= 0) {
        PyErr_Format(PyExc_ValueError, "invalid linktype %d / snaplen %d", linktype, snaplen);
        return -1;
    }
    Py_ssize_t slen;
    const char *s = PyUnicode_AsUTF8AndSize(expr, &slen);
    if (!s)
        return -1;
    if (strlen(s) != (size_t)slen) {
        PyErr_SetString(PyExc_ValueError, "BPF expression contains a NUL character");
        return -1;
    }
    Py_INCREF(expr);
    self->expr = expr;
    self->linktype = linktype;
    self->snaplen = snaplen;
    if (s[0] == '\0') {
        self->match_all = 1;
        return 0;
    }
    pcap_t *p = pcap_open_dead(pw_linktype_to_dlt((uint32_t)linktype), snaplen);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    /* libpcap's compiler can take seconds on a long expression: it runs without the GIL,
     * one compile at a time in the process (older libpcaps are not reentrant here). The
     * expression's bytes stay valid: self->expr holds a reference to the str. */
    int rc;
    char err[PCAP_ERRBUF_SIZE];
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&compile_lock);
    rc = pcap_compile(p, &self->prog, s, 1, PW_BPF_NETMASK);
    if (rc < 0)
        snprintf(err, sizeof err, "%s", pcap_geterr(p));
    pthread_mutex_unlock(&compile_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        pcap_close(p);
        return -1;
    }
    pcap_close(p);
    self->compiled = 1;
    return 0;
}

static void Filter_dealloc(PwFilter *self)
{
    if (self->compiled)
        pcap_freecode(&self->prog);
    Py_XDECREF(self->expr);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Filter_get_expr(PwFilter *self, void *c)
{
    (void)c;
    if (!self->expr)
        Py_RETURN_NONE;
    Py_INCREF(self->expr);
    return self->expr;
}

static PyObject *Filter_get_linktype(PwFilter *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->linktype);
}

static PyObject *Filter_get_snaplen(PwFilter *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->snaplen);
}

static PyGetSetDef Filter_getset[] = {
    {"expr", (getter)Filter_get_expr, NULL, "the BPF expression", NULL},
    {"linktype", (getter)Filter_get_linktype, NULL, "LINKTYPE_ value it was compiled for", NULL},
    {"snaplen", (getter)Filter_get_snaplen, NULL, "snapshot length it was compiled for", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PwFilterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pcapwire._native.Filter",
    .tp_basicsize = sizeof(PwFilter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Filter(expr, linktype, snaplen): a BPF expression compiled by libpcap\n"
              "(optimised, netmask 0 like tcpdump -r). ValueError with libpcap's message on a\n"
              "bad expression; \"\" matches everything.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Filter_init,
    .tp_dealloc = (destructor)Filter_dealloc,
    .tp_getset = Filter_getset,
};

/* ---- scan ------------------------------------------------------------------------------- */
enum { SC_OK, SC_NOMEM, SC_HDR_PAST_END, SC_REC_PAST_END, SC_CROSSES_END, SC_OFFSET_RANGE };

typedef struct {
    const uint8_t *buf;
    size_t buflen;
    const uint8_t *offs; /* u32 LE array or NULL */
    size_t pos, end;     /* bytes, or indices into offs */
    int tsprec;
    uint32_t snaplen;
    const struct bpf_program *prog; /* NULL: no BPF */
    int64_t t0, t1;
    int has_t0, has_t1;
    size_t max_out, max_examined;
    /* results */
    uint8_t *out;
    size_t out_len, out_cap;
    int64_t *ts;
    size_t ts_n, ts_cap;
    size_t examined;
    int err;
    uint64_t err_at;
    uint32_t err_val;
} scan_t;

static int reserve(scan_t *s, size_t more)
{
    if (s->out_len + more > s->out_cap) {
        size_t nc = s->out_cap ? s->out_cap : 65536;
        while (nc < s->out_len + more)
            nc *= 2;
        uint8_t *o = realloc(s->out, nc);
        if (!o)
            return 0;
        s->out = o;
        s->out_cap = nc;
    }
    if (s->ts_n == s->ts_cap) {
        size_t nc = s->ts_cap ? s->ts_cap * 2 : 1024;
        int64_t *t = realloc(s->ts, nc * sizeof(int64_t));
        if (!t)
            return 0;
        s->ts = t;
        s->ts_cap = nc;
    }
    return 1;
}

static void scan_core(scan_t *s)
{
    const int seq = s->offs == NULL;
    while (s->pos < s->end) {
        if (s->max_examined && s->examined >= s->max_examined)
            return;
        size_t at;
        if (seq) {
            at = s->pos;
        } else {
            at = pw_le32(s->offs + s->pos * 4);
        }
        if (at > s->buflen || s->buflen - at < 16) {
            s->err = seq ? SC_HDR_PAST_END : SC_OFFSET_RANGE;
            s->err_at = at;
            return;
        }
        const uint8_t *h = s->buf + at;
        uint32_t sec = pw_le32(h), frac = pw_le32(h + 4), cap = pw_le32(h + 8),
                 len = pw_le32(h + 12);
        if (cap > s->buflen - at - 16) {
            s->err = SC_REC_PAST_END;
            s->err_at = at;
            s->err_val = cap;
            return;
        }
        size_t next = at + 16 + cap;
        if (seq && next > s->end) {
            s->err = SC_CROSSES_END;
            s->err_at = at;
            s->err_val = cap;
            return;
        }
        int64_t ts = (int64_t)sec * 1000000000LL +
                     (s->tsprec == 6 ? (int64_t)frac * 1000 : (int64_t)frac);
        uint32_t usec = s->tsprec == 9 ? frac / 1000u : frac;
        uint32_t ocap = cap > s->snaplen ? s->snaplen : cap;
        int keep = (!s->has_t0 || ts >= s->t0) && (!s->has_t1 || ts < s->t1);
        if (keep && s->prog) {
            struct pcap_pkthdr ph;
            ph.ts.tv_sec = (time_t)sec;
            ph.ts.tv_usec = (suseconds_t)usec;
            ph.caplen = ocap;
            ph.len = len;
            keep = pcap_offline_filter(s->prog, &ph, h + 16) != 0;
        }
        if (keep) {
            size_t rl = 16 + (size_t)ocap;
            if (s->ts_n > 0 && s->out_len + rl > s->max_out)
                return; /* resume here next call */
            if (!reserve(s, rl)) {
                s->err = SC_NOMEM;
                return;
            }
            uint8_t *o = s->out + s->out_len;
            pw_wr32(o, sec);
            pw_wr32(o + 4, usec);
            pw_wr32(o + 8, ocap);
            pw_wr32(o + 12, len);
            memcpy(o + 16, h + 16, ocap);
            s->out_len += rl;
            s->ts[s->ts_n++] = ts;
        }
        s->examined++;
        s->pos = seq ? next : s->pos + 1;
    }
}

static int opt_i64(PyObject *o, int64_t *v, int *has, const char *what)
{
    if (!o || o == Py_None) {
        *has = 0;
        return 0;
    }
    long long x = PyLong_AsLongLong(o);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None", what);
        return -1;
    }
    *v = x;
    *has = 1;
    return 0;
}

PyObject *pw_scan(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"buf", "start", "end", "tsprec", "snaplen", "filter", "t_start_ns",
                             "t_end_ns", "offsets", "max_out", "max_examined", NULL};
    Py_buffer buf, offs;
    long long start, end, snaplen = -1, max_out = 262144, max_examined = 0;
    int tsprec = -1;
    PyObject *filter = Py_None, *t0o = Py_None, *t1o = Py_None, *offo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*LL|$iLOOOOLL", kwlist, &buf, &start, &end,
                                     &tsprec, &snaplen, &filter, &t0o, &t1o, &offo, &max_out,
                                     &max_examined))
        return NULL;
    scan_t s;
    memset(&s, 0, sizeof s);
    PyObject *res = NULL;
    int have_offs = 0;
    if (tsprec == -1 || snaplen == -1) {
        PyErr_SetString(PyExc_TypeError, "scan() needs the keyword arguments tsprec and snaplen");
        goto done;
    }
    if (tsprec != 6 && tsprec != 9) {
        PyErr_Format(PyExc_ValueError, "tsprec must be 6 or 9, not %d", tsprec);
        goto done;
    }
    if (snaplen <= 0 || snaplen > 0x7FFFFFFFLL) {
        PyErr_Format(PyExc_ValueError, "invalid snaplen %lld", snaplen);
        goto done;
    }
    if (max_out < 0 || max_examined < 0) {
        PyErr_SetString(PyExc_ValueError, "max_out and max_examined must be >= 0");
        goto done;
    }
    if (filter != Py_None && !PyObject_TypeCheck(filter, &PwFilterType)) {
        PyErr_SetString(PyExc_TypeError, "filter must be a Filter or None");
        goto done;
    }
    if (opt_i64(t0o, &s.t0, &s.has_t0, "t_start_ns") < 0 ||
        opt_i64(t1o, &s.t1, &s.has_t1, "t_end_ns") < 0)
        goto done;
    size_t limit = (size_t)buf.len;
    if (offo != Py_None) {
        if (PyObject_GetBuffer(offo, &offs, PyBUF_SIMPLE) < 0)
            goto done;
        have_offs = 1;
        if (offs.len % 4 != 0) {
            PyErr_Format(PyExc_ValueError, "offsets buffer of %zd bytes is not a u32 array",
                         offs.len);
            goto done;
        }
        s.offs = offs.buf;
        limit = (size_t)offs.len / 4;
    }
    if (start < 0 || end < start || (unsigned long long)end > limit) {
        PyErr_Format(PyExc_ValueError, "start %lld / end %lld outside 0..%zu (%s)", start, end,
                     limit, have_offs ? "offset indices" : "buffer bytes");
        goto done;
    }
    PwFilter *f = filter == Py_None ? NULL : (PwFilter *)filter;
    if (f && !f->expr) {
        PyErr_SetString(PyExc_ValueError, "Filter not initialised");
        goto done;
    }
    s.buf = buf.buf;
    s.buflen = (size_t)buf.len;
    s.pos = (size_t)start;
    s.end = (size_t)end;
    s.tsprec = tsprec;
    s.snaplen = (uint32_t)snaplen;
    s.prog = (f && !f->match_all) ? &f->prog : NULL;
    s.max_out = (size_t)max_out;
    s.max_examined = (size_t)max_examined;
    Py_BEGIN_ALLOW_THREADS
    scan_core(&s);
    Py_END_ALLOW_THREADS
    switch (s.err) {
    case SC_OK:
        break;
    case SC_NOMEM:
        PyErr_NoMemory();
        goto done;
    case SC_HDR_PAST_END:
        PyErr_Format(PyExc_ValueError, "corrupt segment: record header at byte %llu extends past "
                     "the end of the segment (%zu bytes)", (unsigned long long)s.err_at, s.buflen);
        goto done;
    case SC_OFFSET_RANGE:
        PyErr_Format(PyExc_ValueError, "corrupt index: record offset %llu (index %zu) is outside "
                     "the segment (%zu bytes)", (unsigned long long)s.err_at, s.pos, s.buflen);
        goto done;
    case SC_REC_PAST_END:
        PyErr_Format(PyExc_ValueError, "corrupt segment: record at byte %llu has caplen %u, past "
                     "the end of the segment (%zu bytes)", (unsigned long long)s.err_at,
                     s.err_val, s.buflen);
        goto done;
    case SC_CROSSES_END:
        PyErr_Format(PyExc_ValueError, "corrupt segment: record at byte %llu (caplen %u) crosses "
                     "the scan end %zu", (unsigned long long)s.err_at, s.err_val, s.end);
        goto done;
    }
    res = Py_BuildValue("(y#y#nn)", (const char *)(s.out ? s.out : (uint8_t *)""),
                        (Py_ssize_t)s.out_len, (const char *)(s.ts ? (void *)s.ts : ""),
                        (Py_ssize_t)(s.ts_n * 8), (Py_ssize_t)s.pos, (Py_ssize_t)s.examined);
done:
    free(s.out);
    free(s.ts);
    if (have_offs)
        PyBuffer_Release(&offs);
    PyBuffer_Release(&buf);
    return res;
}
