/* merge_records(): the hot loop of pcapwire.cluster.merge, the stable k-way merge of
 * classic-pcap record streams (the caller keeps the streaming, the headers and the failure
 * handling; see core/cluster/merge.py and README.md, "merge_records").
 *
 * Each input is a buffer of raw record bytes (no file header) and a read position. Records
 * leave in timestamp order, compared as (seconds, nanoseconds) at full precision; ties go to
 * the HIGHER input index (mergecap's rule); every record is written with a little-endian,
 * microsecond header (nanoseconds truncated), its captured bytes unchanged. The loop stops
 * as soon as any input lacks a whole record at its position (fewer than 16 header bytes,
 * fewer captured bytes than its caplen says, or a caplen over max_record: the caller looks
 * at that input) or when the next record would push the output past max_out (one record
 * always goes). Every read is checked against the buffer's length; no length field of the
 * input is trusted.
 */
#include "pcapwire_native.h"

#define MERGE_RECORD_LEN 16u

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;    /* where the head record starts */
    int fmt;       /* PW_MERGE_* */
    uint32_t sec;  /* head record's timestamp (valid when the head is whole) */
    uint64_t ns;   /* fraction in ns: up to 2^32 * 1000, so 64 bits */
    uint32_t caplen;
} merge_in;

/* Parse the head record at in->pos: 1 when it is whole and within max_record. */
static int head(merge_in *in, uint32_t max_record)
{
    if (in->len - in->pos < MERGE_RECORD_LEN)
        return 0;
    const uint8_t *p = in->buf + in->pos;
    int sw = in->fmt & PW_MERGE_SWAPPED;
    uint32_t caplen = pw_rd32(sw, p + 8);
    if (caplen > max_record || in->len - in->pos - MERGE_RECORD_LEN < caplen)
        return 0;
    uint32_t frac = pw_rd32(sw, p + 4);
    in->sec = pw_rd32(sw, p);
    in->ns = (in->fmt & PW_MERGE_NANO) ? frac : (uint64_t)frac * 1000u;
    in->caplen = caplen;
    return 1;
}

/* a's head goes before b's, given that a has the lower index (ties: the higher first) */
static inline int before(const merge_in *a, const merge_in *b)
{
    return a->sec < b->sec || (a->sec == b->sec && a->ns < b->ns);
}

/* The merge loop (no Python calls: runs without the GIL). Returns the index of the input
 * that lacks a whole record, or -1 when the output is full; *out_len says what was written
 * (cap is at least one record of max_record, so the first record always fits). */
static Py_ssize_t merge_core(merge_in *in, Py_ssize_t k, uint8_t *out, size_t cap,
                             size_t max_out, uint32_t max_record, size_t *out_len)
{
    size_t n = 0;
    for (Py_ssize_t i = 0; i < k; i++)
        if (!head(&in[i], max_record)) {
            *out_len = 0;
            return i;
        }
    for (;;) {
        Py_ssize_t m = 0;
        for (Py_ssize_t i = 1; i < k; i++)
            if (!before(&in[m], &in[i]))
                m = i;
        merge_in *h = &in[m];
        size_t rec = MERGE_RECORD_LEN + (size_t)h->caplen;
        if (n && (n + rec > max_out || n + rec > cap)) {
            *out_len = n;
            return -1;
        }
        const uint8_t *src = h->buf + h->pos;
        uint32_t hdr[4];
        hdr[0] = h->sec;
        hdr[1] = (uint32_t)(h->ns / 1000u); /* µs as is; ns truncated to µs */
        hdr[2] = h->caplen;
        hdr[3] = pw_rd32(h->fmt & PW_MERGE_SWAPPED, src + 12);
        memcpy(out + n, hdr, MERGE_RECORD_LEN);
        memcpy(out + n + MERGE_RECORD_LEN, src + MERGE_RECORD_LEN, h->caplen);
        n += rec;
        h->pos += rec;
        if (!head(h, max_record)) {
            *out_len = n;
            return m;
        }
    }
}

PyObject *pw_merge_records(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"bufs", "positions", "formats", "max_out", "max_record", NULL};
    PyObject *bufs_o, *pos_o, *fmt_o;
    long long max_out, max_record;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO$LL", kwlist, &bufs_o, &pos_o, &fmt_o,
                                     &max_out, &max_record))
        return NULL;
    if (max_out < 1) {
        PyErr_Format(PyExc_ValueError, "max_out must be positive, not %lld", max_out);
        return NULL;
    }
    if (max_record < 0 || max_record > 0x7FFFFFFFLL) {
        PyErr_Format(PyExc_ValueError, "max_record %lld outside 0..2^31-1", max_record);
        return NULL;
    }
    PyObject *bufs = PySequence_Fast(bufs_o, "bufs must be a sequence of buffers");
    PyObject *poss = bufs ? PySequence_Fast(pos_o, "positions must be a sequence") : NULL;
    PyObject *fmts = poss ? PySequence_Fast(fmt_o, "formats must be a sequence") : NULL;
    PyObject *res = NULL, *out = NULL;
    Py_buffer *views = NULL;
    merge_in *in = NULL;
    Py_ssize_t k = 0, held = 0;
    if (!fmts)
        goto done;
    k = PySequence_Fast_GET_SIZE(bufs);
    if (PySequence_Fast_GET_SIZE(poss) != k || PySequence_Fast_GET_SIZE(fmts) != k) {
        PyErr_Format(PyExc_ValueError, "%zd bufs, %zd positions and %zd formats: need one "
                     "of each per input", k, PySequence_Fast_GET_SIZE(poss),
                     PySequence_Fast_GET_SIZE(fmts));
        goto done;
    }
    if (k == 0) {
        res = Py_BuildValue("(y#()n)", "", (Py_ssize_t)0, (Py_ssize_t)-1);
        goto done;
    }
    views = PyMem_Calloc((size_t)k, sizeof *views);
    in = PyMem_Calloc((size_t)k, sizeof *in);
    if (!views || !in) {
        PyErr_NoMemory();
        goto done;
    }
    size_t avail = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bufs, i), &views[i], PyBUF_SIMPLE) < 0)
            goto done;
        held++;
        long long pos = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(poss, i));
        long fmt = PyLong_AsLong(PySequence_Fast_GET_ITEM(fmts, i));
        if (PyErr_Occurred())
            goto done;
        if (pos < 0 || pos > views[i].len) {
            PyErr_Format(PyExc_ValueError, "position %lld of input %zd outside its buffer "
                         "(0..%zd)", pos, i, views[i].len);
            goto done;
        }
        if (fmt < 0 || fmt > (PW_MERGE_NANO | PW_MERGE_SWAPPED)) {
            PyErr_Format(PyExc_ValueError, "format %ld of input %zd is not a combination of "
                         "MERGE_NANO and MERGE_SWAPPED", fmt, i);
            goto done;
        }
        in[i].buf = views[i].buf;
        in[i].len = (size_t)views[i].len;
        in[i].pos = (size_t)pos;
        in[i].fmt = (int)fmt;
        avail += in[i].len - in[i].pos;
    }
    /* the output never holds more than the inputs have, nor more than max_out except for a
     * single record (of at most 16 + max_record bytes) */
    size_t cap = (size_t)max_out;
    if (cap < MERGE_RECORD_LEN + (size_t)max_record)
        cap = MERGE_RECORD_LEN + (size_t)max_record;
    if (cap > avail)
        cap = avail;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (!out)
        goto done;
    size_t out_len = 0;
    Py_ssize_t stop;
    Py_BEGIN_ALLOW_THREADS
    stop = merge_core(in, k, (uint8_t *)PyBytes_AS_STRING(out), cap, (size_t)max_out,
                      (uint32_t)max_record, &out_len);
    Py_END_ALLOW_THREADS
    if (out_len != cap && _PyBytes_Resize(&out, (Py_ssize_t)out_len) < 0)
        goto done; /* out was freed and set to NULL */
    PyObject *positions = PyTuple_New(k);
    if (!positions)
        goto done;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *p = PyLong_FromSize_t(in[i].pos);
        if (!p) {
            Py_DECREF(positions);
            goto done;
        }
        PyTuple_SET_ITEM(positions, i, p);
    }
    res = Py_BuildValue("(ONn)", out, positions, stop);
done:
    Py_XDECREF(out);
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(in);
    Py_XDECREF(fmts);
    Py_XDECREF(poss);
    Py_XDECREF(bufs);
    return res;
}

/* count_records(buf, start, *, swapped=False) -> (records, end): walk the record headers
 * of a classic-pcap record stream from byte start on (each record: 16 header bytes, then
 * the captured length its header says, read big-endian when swapped) while a whole header
 * is in buf. end is where the next record starts: past len(buf) when the last record's
 * bytes continue in the stream's next piece. Only headers are read; nothing is checked
 * against a snaplen (pcapwire.cluster.fanout.RecordCounter counts what the merge wrote). */
PyObject *pw_count_records(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"buf", "start", "swapped", NULL};
    Py_buffer view;
    Py_ssize_t start;
    int swapped = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n|$p", kwlist, &view, &start, &swapped))
        return NULL;
    if (start < 0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "start must not be negative, not %zd", start);
        return NULL;
    }
    const uint8_t *p = view.buf;
    size_t len = (size_t)view.len, pos = (size_t)start;
    Py_ssize_t n = 0;
    while (pos <= len && len - pos >= MERGE_RECORD_LEN) {
        pos += MERGE_RECORD_LEN + (size_t)pw_rd32(swapped, p + pos + 8);
        n++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nn)", n, (Py_ssize_t)pos);
}
