/* SegmentIndexer: the flow index of one segment file.
 *
 * add() appends (slot, offset) per packet, where a slot is a flow or a pending fragment
 * group (non-first fragments that arrived before their first fragment). finish() resolves
 * groups to flows, orders each flow's offsets by capture order (counting sort), and returns
 * the flows in order of their first packet. Reusable: finish() resets the state. */
#include "pcapwire_native.h"
#include <stdlib.h>


#define NOSLOT UINT32_MAX

typedef struct {
    uint8_t ipver, proto;
    uint16_t port_a, port_b;
    uint8_t pad[2];
    uint8_t a[16], b[16];
} fkey; /* 40 bytes, padding zeroed: compared and hashed as bytes */

typedef struct {
    fkey key;          /* flows: normalised key; groups: (src, dst) as seen, ports 0 */
    uint32_t alias;    /* groups: the flow they were resolved to, else NOSLOT */
    uint8_t is_group;
    int8_t syn_dir;    /* direction of the first SYN without ACK, -1 none */
    int8_t first_dir;  /* direction of the first packet */
    int8_t group_dir;  /* groups: direction of the resolved first fragment in its flow */
    uint64_t first_seq;
    int64_t first_ts, last_ts;
    uint64_t pkts[2], bytes[2];
} slot_t;

typedef struct {
    uint8_t ipver, proto, valid, dir;
    uint32_t id;
    uint8_t src[16], dst[16];
    uint32_t slot;
    uint64_t stamp;
} frag_entry;

typedef struct {
    PyObject_HEAD
    int busy;
    slot_t *slots;
    uint32_t nslots, slots_cap;
    uint64_t *htab; /* open addressing: (hash32 << 32) | slot; empty = all ones */
    uint32_t hcap, hcount;
    uint32_t *pkt_slot, *pkt_off;
    size_t npkts, pkts_cap;
    frag_entry *frags; /* PW_FRAG_TABLE_BUCKETS x PW_FRAG_TABLE_WAYS, allocated on first use */
    uint64_t frag_stamp;
    uint32_t pending_groups;
    int nomem;
} PwIndexer;

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h ^= w;
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
    }
    return h ^ (h >> 29);
}

static void reset(PwIndexer *x)
{
    free(x->slots);
    free(x->htab);
    free(x->pkt_slot);
    free(x->pkt_off);
    free(x->frags);
    x->slots = NULL;
    x->htab = NULL;
    x->pkt_slot = x->pkt_off = NULL;
    x->frags = NULL;
    x->nslots = x->slots_cap = x->hcap = x->hcount = 0;
    x->npkts = x->pkts_cap = 0;
    x->frag_stamp = 0;
    x->pending_groups = 0;
    x->nomem = 0;
}

static uint32_t new_slot(PwIndexer *x, const fkey *k, int is_group)
{
    if (x->nslots == x->slots_cap) {
        uint32_t nc = x->slots_cap ? x->slots_cap * 2 : 1024;
        slot_t *v = realloc(x->slots, (size_t)nc * sizeof(slot_t));
        if (!v)
            return NOSLOT;
        x->slots = v;
        x->slots_cap = nc;
    }
    slot_t *s = &x->slots[x->nslots];
    memset(s, 0, sizeof *s);
    s->key = *k;
    s->alias = NOSLOT;
    s->is_group = (uint8_t)is_group;
    s->syn_dir = -1;
    s->first_dir = -1;
    s->first_seq = UINT64_MAX;
    s->first_ts = INT64_MAX;
    s->last_ts = INT64_MIN;
    return x->nslots++;
}

#define HEMPTY UINT64_MAX

static int grow_htab(PwIndexer *x)
{
    uint32_t nc = x->hcap ? x->hcap * 2 : 4096;
    uint64_t *t = malloc((size_t)nc * sizeof(uint64_t));
    if (!t)
        return 0;
    memset(t, 0xFF, (size_t)nc * sizeof(uint64_t));
    for (uint32_t i = 0; i < x->hcap; i++) {
        uint64_t e = x->htab[i];
        if (e == HEMPTY)
            continue;
        uint32_t j = (uint32_t)(e >> 32) & (nc - 1);
        while (t[j] != HEMPTY)
            j = (j + 1) & (nc - 1);
        t[j] = e;
    }
    free(x->htab);
    x->htab = t;
    x->hcap = nc;
    return 1;
}

/* The flow of key k for a packet at ts: the key's current flow, or a new one when the key
 * is new or its current flow has been silent for more than PW_FLOW_IDLE_NS before ts (the
 * new flow then takes the key's place in the table; the old one keeps its packets). */
static uint32_t flow_slot(PwIndexer *x, const fkey *k, int64_t ts)
{
    if ((x->hcount + 1) * 2 > x->hcap && !grow_htab(x))
        return NOSLOT;
    uint64_t h = hash_bytes(k, sizeof(fkey));
    uint32_t tag = (uint32_t)(h ^ (h >> 32));
    uint32_t j = tag & (x->hcap - 1);
    int replace = 0;
    for (;;) {
        uint64_t e = x->htab[j];
        if (e == HEMPTY)
            break;
        if ((uint32_t)(e >> 32) == tag && memcmp(&x->slots[(uint32_t)e].key, k, sizeof(fkey)) == 0) {
            const slot_t *s = &x->slots[(uint32_t)e];
            if (s->last_ts == INT64_MIN || ts <= s->last_ts ||
                (uint64_t)ts - (uint64_t)s->last_ts <= PW_FLOW_IDLE_NS)
                return (uint32_t)e;
            replace = 1;
            break;
        }
        j = (j + 1) & (x->hcap - 1);
    }
    uint32_t s = new_slot(x, k, 0);
    if (s != NOSLOT) {
        x->htab[j] = ((uint64_t)tag << 32) | s;
        if (!replace)
            x->hcount++;
    }
    return s;
}

/* normalised key: (a, port_a) <= (b, port_b); *dir = 0 when src is side a */
static void make_key(fkey *k, uint8_t ipver, uint8_t proto, const uint8_t *src, uint16_t sp,
                     const uint8_t *dst, uint16_t dp, int *dir)
{
    memset(k, 0, sizeof *k);
    k->ipver = ipver;
    k->proto = proto;
    int c = memcmp(src, dst, 16);
    if (c < 0 || (c == 0 && sp <= dp)) {
        memcpy(k->a, src, 16);
        memcpy(k->b, dst, 16);
        k->port_a = sp;
        k->port_b = dp;
        *dir = 0;
    } else {
        memcpy(k->a, dst, 16);
        memcpy(k->b, src, 16);
        k->port_a = dp;
        k->port_b = sp;
        *dir = 1;
    }
}

/* fragment table: set-associative, oldest entry of a full bucket evicted */
static frag_entry *frag_find(PwIndexer *x, const pw_meta *m, int create)
{
    if (!x->frags) {
        if (!create)
            return NULL;
        x->frags = calloc((size_t)PW_FRAG_TABLE_BUCKETS * PW_FRAG_TABLE_WAYS, sizeof(frag_entry));
        if (!x->frags)
            return NULL;
    }
    uint8_t proto = m->ipver == 4 ? m->proto : 0; /* IPv6: (src, dst, id) identify it */
    uint8_t kb[40];
    memcpy(kb, m->src, 16);
    memcpy(kb + 16, m->dst, 16);
    memcpy(kb + 32, &m->frag_id, 4);
    kb[36] = m->ipver;
    kb[37] = proto;
    kb[38] = kb[39] = 0;
    frag_entry *bucket = x->frags + (hash_bytes(kb, 40) & (PW_FRAG_TABLE_BUCKETS - 1)) *
                                        PW_FRAG_TABLE_WAYS;
    frag_entry *victim = NULL;
    for (unsigned w = 0; w < PW_FRAG_TABLE_WAYS; w++) {
        frag_entry *e = &bucket[w];
        if (!e->valid) {
            if (!victim || victim->valid)
                victim = e;
            continue;
        }
        if (e->ipver == m->ipver && e->proto == proto && e->id == m->frag_id &&
            memcmp(e->src, m->src, 16) == 0 && memcmp(e->dst, m->dst, 16) == 0)
            return e;
        if (!victim || (victim->valid && e->stamp < victim->stamp))
            victim = e;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof *victim);
    victim->valid = 1;
    victim->ipver = m->ipver;
    victim->proto = proto;
    victim->id = m->frag_id;
    memcpy(victim->src, m->src, 16);
    memcpy(victim->dst, m->dst, 16);
    victim->slot = NOSLOT;
    return victim;
}

static void account(slot_t *s, int dir, const pw_meta *m, uint64_t seq)
{
    s->pkts[dir]++;
    s->bytes[dir] += m->origlen;
    if (m->ts_ns < s->first_ts)
        s->first_ts = m->ts_ns;
    if (m->ts_ns > s->last_ts)
        s->last_ts = m->ts_ns;
    if (seq < s->first_seq) {
        s->first_seq = seq;
        s->first_dir = (int8_t)dir;
    }
    if (m->ipver && m->proto == 6 && !(m->flags & PW_F_FRAGMENT && !(m->flags & PW_F_FIRST_FRAGMENT)) &&
        (m->tcp_flags & (PW_TCP_SYN | PW_TCP_ACK)) == PW_TCP_SYN && s->syn_dir < 0)
        s->syn_dir = (int8_t)dir;
}

/* returns 0 on success, -1 out of memory */
static int add_packet(PwIndexer *x, const pw_meta *m, uint32_t off)
{
    uint64_t seq = x->npkts;
    uint32_t slot;
    int dir = 0;
    fkey k;
    if (m->ipver == 0) {
        memset(&k, 0, sizeof k);
        k.port_a = m->ethertype;
        slot = flow_slot(x, &k, m->ts_ns);
    } else if ((m->flags & PW_F_FRAGMENT) && !(m->flags & PW_F_FIRST_FRAGMENT)) {
        frag_entry *e = frag_find(x, m, 1);
        if (e && e->slot != NOSLOT) {
            slot = e->slot;
            dir = e->dir;
        } else if (e && x->pending_groups < PW_MAX_PENDING_FRAG_GROUPS) {
            memset(&k, 0, sizeof k);
            k.ipver = m->ipver;
            k.proto = m->proto;
            memcpy(k.a, m->src, 16);
            memcpy(k.b, m->dst, 16);
            slot = new_slot(x, &k, 1);
            if (slot == NOSLOT)
                return -1;
            x->pending_groups++;
            e->slot = slot;
            e->dir = 0;
            e->stamp = ++x->frag_stamp;
        } else { /* limit reached (or no table): straight to the ports-0 flow */
            make_key(&k, m->ipver, m->proto, m->src, 0, m->dst, 0, &dir);
            slot = flow_slot(x, &k, m->ts_ns);
        }
    } else {
        make_key(&k, m->ipver, m->proto, m->src, m->sport, m->dst, m->dport, &dir);
        slot = flow_slot(x, &k, m->ts_ns);
        if (slot != NOSLOT && (m->flags & PW_F_FIRST_FRAGMENT)) {
            frag_entry *e = frag_find(x, m, 1);
            if (e) {
                if (e->slot != NOSLOT && x->slots[e->slot].is_group &&
                    x->slots[e->slot].alias == NOSLOT) {
                    x->slots[e->slot].alias = slot;
                    x->slots[e->slot].group_dir = (int8_t)dir;
                }
                e->slot = slot;
                e->dir = (uint8_t)dir;
                e->stamp = ++x->frag_stamp;
            }
        }
    }
    if (slot == NOSLOT)
        return -1;
    account(&x->slots[slot], dir, m, seq);
    if (x->npkts == x->pkts_cap) {
        size_t nc = x->pkts_cap ? x->pkts_cap * 2 : 65536;
        uint32_t *a = realloc(x->pkt_slot, nc * sizeof(uint32_t));
        if (!a)
            return -1;
        x->pkt_slot = a;
        uint32_t *b = realloc(x->pkt_off, nc * sizeof(uint32_t));
        if (!b)
            return -1;
        x->pkt_off = b;
        x->pkts_cap = nc;
    }
    x->pkt_slot[x->npkts] = slot;
    x->pkt_off[x->npkts] = off;
    x->npkts++;
    return 0;
}

static PyObject *Indexer_add(PwIndexer *self, PyObject *args)
{
    Py_buffer view;
    long long base;
    if (!PyArg_ParseTuple(args, "y*L", &view, &base))
        return NULL;
    PyObject *res = NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "SegmentIndexer: add() while another call is running");
        goto done;
    }
    if (view.len % PW_META_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "meta length %zd is not a multiple of META_SIZE (%zd)",
                     view.len, PW_META_SIZE);
        goto done;
    }
    if (base < 0 || base > (long long)UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "base_offset %lld outside 0..2**32-1", base);
        goto done;
    }
    size_t n = (size_t)(view.len / PW_META_SIZE);
    const uint8_t *p = view.buf;
    /* validate offsets first (cheap), so a bad batch changes nothing */
    for (size_t i = 0; i < n; i++) {
        uint32_t ro;
        memcpy(&ro, p + i * sizeof(pw_meta) + offsetof(pw_meta, rec_off), 4);
        if ((uint64_t)base + ro > UINT32_MAX) {
            PyErr_Format(PyExc_ValueError, "segment offset %llu of packet %zu does not fit in "
                         "32 bits (segments must stay below 4 GiB)",
                         (unsigned long long)base + ro, i);
            goto done;
        }
    }
    int rc = 0;
    int64_t first = INT64_MAX, last = INT64_MIN;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < n && rc == 0; i++) {
        pw_meta m;
        memcpy(&m, p + i * sizeof(pw_meta), sizeof m);
        if (m.ts_ns < first)
            first = m.ts_ns;
        if (m.ts_ns > last)
            last = m.ts_ns;
        rc = add_packet(self, &m, (uint32_t)base + m.rec_off);
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc) {
        self->nomem = 1;
        PyErr_NoMemory();
        goto done;
    }
    if (n == 0)
        first = last = 0;
    res = Py_BuildValue("(nLL)", (Py_ssize_t)n, (long long)first, (long long)last);
done:
    PyBuffer_Release(&view);
    return res;
}

/* merge group g (resolved to flow f with direction d) */
static void merge_group(slot_t *f, const slot_t *g, int d)
{
    f->pkts[d] += g->pkts[0];
    f->bytes[d] += g->bytes[0];
    if (g->first_ts < f->first_ts)
        f->first_ts = g->first_ts;
    if (g->last_ts > f->last_ts)
        f->last_ts = g->last_ts;
    if (g->first_seq < f->first_seq) {
        f->first_seq = g->first_seq;
        f->first_dir = (int8_t)d;
    }
}

typedef struct {
    uint64_t seq;
    uint32_t slot;
} seq_slot;

static int cmp_seq(const void *a, const void *b)
{
    uint64_t x = ((const seq_slot *)a)->seq, y = ((const seq_slot *)b)->seq;
    return x < y ? -1 : x > y;
}

typedef struct {
    seq_slot *order; /* flows in order of their first packet */
    uint32_t nflows;
    uint64_t *start; /* flow r's offsets are sorted[start[r] .. start[r+1]) */
    uint32_t *sorted;
} finished_t;

static void finished_free(finished_t *f)
{
    free(f->order);
    free(f->start);
    free(f->sorted);
    memset(f, 0, sizeof *f);
}

/* Resolve fragment groups, order flows, sort offsets by flow. No Python calls. */
static int finish_core(PwIndexer *x, finished_t *out)
{
    uint32_t *final = NULL;
    uint64_t *fill = NULL;
    memset(out, 0, sizeof *out);
    /* 1. unresolved groups -> their ports-0 flow; every group merged into its flow */
    for (uint32_t i = 0; i < x->nslots; i++) {
        if (!x->slots[i].is_group)
            continue;
        slot_t g = x->slots[i];
        int d = g.group_dir;
        uint32_t f = g.alias;
        if (f == NOSLOT) {
            fkey k;
            make_key(&k, g.key.ipver, g.key.proto, g.key.a, 0, g.key.b, 0, &d);
            f = flow_slot(x, &k, g.first_ts); /* may reallocate slots */
            if (f == NOSLOT)
                goto nomem;
            x->slots[i].alias = f;
            x->slots[i].group_dir = (int8_t)d;
        }
        merge_group(&x->slots[f], &g, d);
    }
    /* 2. flows in order of first packet; final flow index of every slot */
    out->order = malloc(((size_t)x->nslots + 1) * sizeof(seq_slot));
    final = malloc(((size_t)x->nslots + 1) * sizeof(uint32_t));
    if (!out->order || !final)
        goto nomem;
    for (uint32_t i = 0; i < x->nslots; i++)
        if (!x->slots[i].is_group && x->slots[i].first_seq != UINT64_MAX) {
            out->order[out->nflows].seq = x->slots[i].first_seq;
            out->order[out->nflows].slot = i;
            out->nflows++;
        }
    qsort(out->order, out->nflows, sizeof(seq_slot), cmp_seq);
    for (uint32_t i = 0; i < x->nslots; i++)
        final[i] = NOSLOT;
    for (uint32_t r = 0; r < out->nflows; r++)
        final[out->order[r].slot] = r;
    for (uint32_t i = 0; i < x->nslots; i++)
        if (x->slots[i].is_group)
            final[i] = final[x->slots[i].alias];
    /* 3. stable counting sort of the offsets by flow (capture order within a flow) */
    out->start = calloc((size_t)out->nflows + 1, sizeof(uint64_t));
    fill = malloc(((size_t)out->nflows + 1) * sizeof(uint64_t));
    out->sorted = malloc((x->npkts ? x->npkts : 1) * sizeof(uint32_t));
    if (!out->start || !fill || !out->sorted)
        goto nomem;
    for (size_t i = 0; i < x->npkts; i++)
        out->start[final[x->pkt_slot[i]] + 1]++;
    for (uint32_t r = 0; r < out->nflows; r++)
        out->start[r + 1] += out->start[r];
    memcpy(fill, out->start, ((size_t)out->nflows + 1) * sizeof(uint64_t));
    for (size_t i = 0; i < x->npkts; i++)
        out->sorted[fill[final[x->pkt_slot[i]]]++] = x->pkt_off[i];
    free(final);
    free(fill);
    return 0;
nomem:
    free(final);
    free(fill);
    finished_free(out);
    return -1;
}

static PyObject *Indexer_finish(PwIndexer *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "SegmentIndexer: finish() while another call runs");
        return NULL;
    }
    if (self->nomem) {
        reset(self);
        PyErr_SetString(PyExc_MemoryError, "SegmentIndexer ran out of memory in add(); reset");
        return NULL;
    }
    finished_t f;
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = finish_core(self, &f);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc < 0) {
        reset(self);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(f.nflows);
    for (uint32_t r = 0; list && r < f.nflows; r++) {
        const slot_t *s = &self->slots[f.order[r].slot];
        int init_a = s->syn_dir >= 0 ? s->syn_dir == 0 : s->first_dir == 0;
        PyObject *t = Py_BuildValue(
            "(BBy#Hy#HNLLKKKKy#)", s->key.ipver, s->key.proto, (const char *)s->key.a,
            (Py_ssize_t)16, s->key.port_a, (const char *)s->key.b, (Py_ssize_t)16, s->key.port_b,
            PyBool_FromLong(init_a), (long long)s->first_ts, (long long)s->last_ts,
            (unsigned long long)s->pkts[0], (unsigned long long)s->bytes[0],
            (unsigned long long)s->pkts[1], (unsigned long long)s->bytes[1],
            (const char *)(f.sorted + f.start[r]),
            (Py_ssize_t)((f.start[r + 1] - f.start[r]) * 4));
        if (!t)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, r, t);
    }
    finished_free(&f);
    reset(self);
    return list;
}

static PyObject *Indexer_get_packets(PwIndexer *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(self->npkts);
}

static void Indexer_dealloc(PwIndexer *self)
{
    reset(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Indexer_methods[] = {
    {"add", (PyCFunction)Indexer_add, METH_VARARGS,
     "add(meta, base_offset) -> (count, first_ts_ns, last_ts_ns): index a batch's meta; record i\n"
     "is at base_offset + rec_off_i. Times are 0 for an empty batch."},
    {"finish", (PyCFunction)Indexer_finish, METH_NOARGS,
     "finish() -> list[Flow]; resets the indexer for the next segment."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Indexer_getset[] = {
    {"packets", (getter)Indexer_get_packets, NULL, "packets added since the last finish()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PwIndexerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pcapwire._native.SegmentIndexer",
    .tp_basicsize = sizeof(PwIndexer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SegmentIndexer(): flow index of one segment. add(meta, base_offset), then\n"
              "finish() -> [(ipver, proto, addr_a, port_a, addr_b, port_b, initiator_is_a,\n"
              "first_ts_ns, last_ts_ns, pkts_a2b, bytes_a2b, pkts_b2a, bytes_b2a, offsets)].\n"
              "finish() resets it, so one indexer can serve segment after segment.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Indexer_dealloc,
    .tp_methods = Indexer_methods,
    .tp_getset = Indexer_getset,
};
