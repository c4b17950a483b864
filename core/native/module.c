/* pcapwire._native: module definition and exported constants. */
#include "pcapwire_native.h"

PyDoc_STRVAR(scan_doc,
"scan(buf, start, end, *, tsprec, snaplen, filter=None, t_start_ns=None, t_end_ns=None,\n"
"     offsets=None, max_out=262144, max_examined=0) -> (records, ts_ns, next_pos, examined)\n\n"
"Read the little-endian records of one segment held in buf. Without offsets, walk records\n"
"from byte start to byte end; with offsets (a u32 array), start/end index that array.\n"
"Records outside [t_start_ns, t_end_ns) or rejected by filter are skipped; the rest are\n"
"written as tcpdump -r SEGMENT -w - writes them (microsecond timestamps, caplen cut to\n"
"snaplen). Stops before the output would exceed max_out bytes (at least one record is\n"
"always emitted), or after max_examined records when that is > 0. ts_ns holds one int64\n"
"per emitted record; next_pos == end when done. A corrupt segment raises ValueError.");

/* merge.c: the merged stream's record count (pcapwire.cluster.fanout.RecordCounter). */
PyObject *pw_count_records(PyObject *self, PyObject *args, PyObject *kwargs);

/* postings.c: the metadata index's postings (pcapwire.search.index). */
PyObject *pw_index_add(PyObject *self, PyObject *args);
PyObject *pw_group_add(PyObject *self, PyObject *args);
PyObject *pw_key_order(PyObject *self, PyObject *args);
PyObject *pw_doc_time_us(PyObject *self, PyObject *value);

/* sqlfuncs.c: SQL functions in C for pcapwire's SQLite connections. */
PyObject *pw_sqlite_functions(PyObject *self, PyObject *unused);

static PyMethodDef module_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))pw_scan, METH_VARARGS | METH_KEYWORDS, scan_doc},
    {"walk_tpacket_block", (PyCFunction)(void (*)(void))pw_walk_tpacket_block,
     METH_VARARGS | METH_KEYWORDS,
     "walk_tpacket_block(block, linktype, snaplen, *, cooked=False, bpf='', lo_ifindex=-1,\n"
     "                   max_batch=1 MiB) -> (batches, counts)\n\n"
     "Capture's ring-block walker on caller-supplied bytes (one TPACKET_V3 block), for tests\n"
     "and fuzzing: batches as Capture.poll() returns them, counts of packets,\n"
     "userland_filtered, bad_frames, bad_blocks."},
    {"merge_records", (PyCFunction)(void (*)(void))pw_merge_records,
     METH_VARARGS | METH_KEYWORDS,
     "merge_records(bufs, positions, formats, *, max_out, max_record)\n"
     "    -> (records: bytes, positions: tuple, stop: int)\n\n"
     "The stable k-way merge step of pcapwire.cluster.merge. bufs[i] holds input i's raw\n"
     "classic records from positions[i] on; formats[i] is MERGE_NANO | MERGE_SWAPPED as they\n"
     "apply. Records leave in (seconds, nanoseconds) order, ties to the higher index, with\n"
     "little-endian microsecond headers (ns truncated), until an input lacks a whole record\n"
     "within max_record captured bytes (stop = its index) or the next record would take the\n"
     "output past max_out (stop = -1; one record always goes). positions: where each input\n"
     "stands now."},
    {"count_records", (PyCFunction)(void (*)(void))pw_count_records,
     METH_VARARGS | METH_KEYWORDS,
     "count_records(buf, start, *, swapped=False) -> (records: int, end: int)\n\n"
     "The record headers of a classic-pcap record stream in buf from byte start on (their\n"
     "captured lengths big-endian when swapped), counted while a whole header is in buf;\n"
     "end: where the next record starts (past len(buf) when the last one continues)."},
    {"index_add", pw_index_add, METH_VARARGS,
     "index_add(doc_id, body, root, other, term_groups, num_groups, max_chars)\n"
     "    -> text | None\n\n"
     "pcapwire.search.index's walk of one document and the grouping of its postings\n"
     "(see core/native/postings.c)."},
    {"group_add", pw_group_add, METH_VARARGS,
     "group_add(groups, doc_id, pairs): doc_id under each distinct (name, value) pair."},
    {"key_order", pw_key_order, METH_VARARGS,
     "key_order(groups, ids) -> [f, v, doc, ...] sorted by field id, then value."},
    {"sqlite_functions", pw_sqlite_functions, METH_NOARGS,
     "sqlite_functions() -> None: every SQLite connection opened afterwards gets\n"
     "pcapwire_ip_text(ipver, addr) (see core/native/sqlfuncs.c), when Python's sqlite3\n"
     "uses the shared libsqlite3 this module links."},
    {"doc_time_us", pw_doc_time_us, METH_O,
     "doc_time_us(value) -> int | None: YYYY-MM-DDTHH:MM:SS.ffffffZ as µs since the epoch."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"Native hot loops of pcapwire: capture parsing (Reader), per-packet dissection into\n"
"META_STRUCT records, the per-segment flow index (SegmentIndexer), BPF (Filter, via\n"
"libpcap) and record scanning (scan). See core/native/README.md for formats and limits.\n\n"
"Per-packet meta: META_SIZE (88) bytes, struct.Struct(META_STRUCT) =\n"
"  <q ts_ns, I rec_off, I caplen, I origlen, I frag_id, I tcp_seq, I tcp_ack,\n"
"   16s src, 16s dst (IPv4 in the first 4 bytes), H sport, H dport, H flags (FLAG_*),\n"
"   H ethertype, B ipver (0 = not IP), B proto, B tcp_flags, B vlan_count, H vlan_id,\n"
"   B icmp_type, B icmp_code, H l3_off, H l4_off, H payload_off, H payload_len\n"
"(names in META_FIELDS, in that order).");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pcapwire._native", module_doc, -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int add_int(PyObject *m, const char *name, long long v)
{
    return PyModule_AddObject(m, name, PyLong_FromLongLong(v));
}

static int add_type(PyObject *m, const char *name, PyTypeObject *t)
{
    if (PyType_Ready(t) < 0)
        return -1;
    Py_INCREF(t);
    if (PyModule_AddObject(m, name, (PyObject *)t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    static const char *const fields[] = {PW_META_FIELDS};
    PyObject *names = PyTuple_New(sizeof fields / sizeof fields[0]);
    if (!names)
        goto fail;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        PyTuple_SET_ITEM(names, (Py_ssize_t)i, PyUnicode_FromString(fields[i]));
    if (PyModule_AddObject(m, "META_FIELDS", names) < 0 ||
        PyModule_AddStringConstant(m, "META_STRUCT", PW_META_STRUCT) < 0 ||
        add_int(m, "META_SIZE", PW_META_SIZE) < 0 ||
        add_int(m, "MAX_CAPLEN", PW_MAX_CAPLEN) < 0 ||
        add_int(m, "MAX_VLAN_DEPTH", PW_MAX_VLAN_DEPTH) < 0 ||
        add_int(m, "MAX_IPV6_EXT_HEADERS", PW_MAX_IPV6_EXT_HEADERS) < 0 ||
        add_int(m, "MAX_PCAPNG_INTERFACES", PW_MAX_PCAPNG_INTERFACES) < 0 ||
        add_int(m, "MAX_PCAPNG_BLOCK", PW_MAX_PCAPNG_BLOCK) < 0 ||
        add_int(m, "MAX_MESSAGES", PW_MAX_MESSAGES) < 0 ||
        add_int(m, "RESYNC_MAX_ORIGLEN", PW_RESYNC_MAX_ORIGLEN) < 0 ||
        add_int(m, "RESYNC_TS_WINDOW_NS", PW_RESYNC_TS_WINDOW_NS) < 0 ||
        add_int(m, "RESYNC_BACKTRACK", PW_RESYNC_BACKTRACK) < 0 ||
        add_int(m, "MAX_PENDING_FRAG_GROUPS", PW_MAX_PENDING_FRAG_GROUPS) < 0 ||
        add_int(m, "FLOW_IDLE_TIMEOUT_NS", PW_FLOW_IDLE_NS) < 0 ||
        add_int(m, "FRAG_TABLE_SIZE", (long long)PW_FRAG_TABLE_BUCKETS * PW_FRAG_TABLE_WAYS) < 0 ||
        add_int(m, "FLAG_FRAGMENT", PW_F_FRAGMENT) < 0 ||
        add_int(m, "FLAG_FIRST_FRAGMENT", PW_F_FIRST_FRAGMENT) < 0 ||
        add_int(m, "FLAG_VLAN", PW_F_VLAN) < 0 ||
        add_int(m, "FLAG_TRUNCATED", PW_F_TRUNCATED) < 0 ||
        add_int(m, "FLAG_IP_OPTIONS", PW_F_IP_OPTIONS) < 0 ||
        add_int(m, "FLAG_IPV6_EXT", PW_F_IPV6_EXT) < 0 ||
        add_int(m, "FLAG_MALFORMED", PW_F_MALFORMED) < 0 ||
        add_int(m, "FLAG_CAPLEN_GT_SNAPLEN", PW_F_CAPLEN_GT_SNAPLEN) < 0 ||
        add_int(m, "FLAG_LAST_FRAGMENT", PW_F_LAST_FRAGMENT) < 0 ||
        add_int(m, "TCP_FIN", PW_TCP_FIN) < 0 || add_int(m, "TCP_SYN", PW_TCP_SYN) < 0 ||
        add_int(m, "TCP_RST", PW_TCP_RST) < 0 || add_int(m, "TCP_ACK", PW_TCP_ACK) < 0 ||
        add_int(m, "MERGE_NANO", PW_MERGE_NANO) < 0 ||
        add_int(m, "MERGE_SWAPPED", PW_MERGE_SWAPPED) < 0 ||
        add_type(m, "Reader", &PwReaderType) < 0 ||
        add_type(m, "SegmentIndexer", &PwIndexerType) < 0 ||
        add_type(m, "Filter", &PwFilterType) < 0 ||
        add_type(m, "Capture", &PwCaptureType) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
