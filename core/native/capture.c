/* Capture: live capture from a Linux interface through an AF_PACKET TPACKET_V3 ring.
 *
 * The socket gets the capture BPF (compiled by libpcap for the interface's link type) in the
 * kernel before it is bound, so filtered packets never reach the ring; PACKET_FANOUT spreads
 * an interface over several sockets. poll() waits (GIL released) for retired blocks, walks
 * them into batches shaped like Reader.feed()'s (capture_ring.c), and hands each block back
 * to the kernel as soon as it is copied. See README.md in this directory. */
#include "capture.h" /* Python.h first: it sets the feature macros the system headers need */

#include <pcap/pcap.h>

#ifdef __linux__
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.block_status) == PW_BD_STATUS, "bd");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.num_pkts) == PW_BD_NUM_PKTS, "bd");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.offset_to_first_pkt) == PW_BD_FIRST,
               "bd");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.blk_len) == PW_BD_BLK_LEN, "bd");
_Static_assert(sizeof(struct tpacket_block_desc) == PW_BD_SIZE, "bd");
_Static_assert(offsetof(struct tpacket3_hdr, tp_next_offset) == PW_T3_NEXT, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_sec) == PW_T3_SEC, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_nsec) == PW_T3_NSEC, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_snaplen) == PW_T3_SNAPLEN, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_len) == PW_T3_LEN, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_status) == PW_T3_STATUS, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, tp_mac) == PW_T3_MAC, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, hv1.tp_vlan_tci) == PW_T3_VLAN_TCI, "t3");
_Static_assert(offsetof(struct tpacket3_hdr, hv1.tp_vlan_tpid) == PW_T3_VLAN_TPID, "t3");
_Static_assert(sizeof(struct tpacket3_hdr) == PW_T3_SIZE, "t3");
_Static_assert(TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) == PW_LL_OFF, "ll");
_Static_assert(TPACKET3_HDRLEN == PW_T3_HDRLEN, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_protocol) == PW_LL_PROTOCOL, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_ifindex) == PW_LL_IFINDEX, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_hatype) == PW_LL_HATYPE, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_pkttype) == PW_LL_PKTTYPE, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_halen) == PW_LL_HALEN, "ll");
_Static_assert(offsetof(struct sockaddr_ll, sll_addr) == PW_LL_ADDR, "ll");
_Static_assert(TP_STATUS_USER == PW_TP_STATUS_USER && PACKET_OUTGOING == PW_PACKET_OUTGOING &&
                   TP_STATUS_VLAN_VALID == PW_TP_STATUS_VLAN_VALID &&
                   TP_STATUS_VLAN_TPID_VALID == PW_TP_STATUS_VLAN_TPID_VALID,
               "status bits");
#endif

/* Records bytes per batch. A block bigger than this is spread over several batches. */
#define PW_CAP_BATCH (1u << 20)
/* Batches returned by one poll() at most (it also stops after one ring's worth of blocks). */
#define PW_CAP_MAX_BATCHES 16
#define PW_CAP_POOL 4
/* room a block needs beyond one snaplen frame: block header, frame header, sockaddr_ll and
 * the kernel's alignment of the packet data (macoff is 82 for Ethernet) */
#define PW_FRAME_ROOM 256

#ifndef ARPHRD_RAWIP
#define ARPHRD_RAWIP 519
#endif

/* ---- walk_tpacket_block(): the walker on caller-supplied bytes (tests, fuzzing) ---------- */
static PyObject *counts_dict(const pw_ring_counts *k)
{
    return Py_BuildValue("{sKsKsKsK}", "packets", (unsigned long long)k->packets,
                         "userland_filtered", (unsigned long long)k->filtered, "bad_frames",
                         (unsigned long long)k->bad_frames, "bad_blocks",
                         (unsigned long long)k->bad_blocks);
}

static PyObject *batch_tuple(uint32_t linktype, uint32_t snaplen, PyObject *records,
                             const pw_meta *meta, size_t meta_n)
{
    PyObject *m = PyBytes_FromStringAndSize((const char *)meta,
                                            (Py_ssize_t)(meta_n * sizeof(pw_meta)));
    if (!m) {
        Py_DECREF(records);
        return NULL;
    }
    return Py_BuildValue("(IIiNNi)", linktype, snaplen, 9, records, m, -1);
}

PyObject *pw_walk_tpacket_block(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"block", "linktype", "snaplen", "cooked", "bpf", "lo_ifindex",
                             "max_batch", NULL};
    Py_buffer view;
    unsigned int linktype, snaplen;
    int cooked = 0;
    const char *bpf = "";
    long long lo_ifindex = -1;
    Py_ssize_t max_batch = PW_CAP_BATCH;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*II|$psLn", kwlist, &view, &linktype,
                                     &snaplen, &cooked, &bpf, &lo_ifindex, &max_batch))
        return NULL;
    PyObject *list = NULL, *res = NULL;
    pw_meta *meta = NULL;
    struct bpf_program prog;
    int have_prog = 0;
    if (snaplen == 0 || snaplen > PW_MAX_CAPLEN || max_batch < 1) {
        PyErr_SetString(PyExc_ValueError, "snaplen must be 1..MAX_CAPLEN, max_batch >= 1");
        goto done;
    }
    if (bpf[0]) {
        char err[PCAP_ERRBUF_SIZE];
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = pw_bpf_compile(pw_linktype_to_dlt(linktype), (int)snaplen, bpf, &prog, err,
                            sizeof err);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            PyErr_SetString(PyExc_ValueError, err);
            goto done;
        }
        have_prog = 1;
    }
    pw_ring_cfg cfg = {linktype, snaplen, pw_link_class(linktype), cooked, lo_ifindex,
                       have_prog ? &prog : NULL};
    size_t cap = (size_t)max_batch;
    if (cap < PW_REC_OVERHEAD + snaplen)
        cap = PW_REC_OVERHEAD + snaplen; /* one record always fits */
    size_t meta_cap = cap / 16 + 1;
    meta = malloc(meta_cap * sizeof(pw_meta));
    list = PyList_New(0);
    if (!meta || !list) {
        PyErr_NoMemory();
        goto done;
    }
    pw_ring_counts k = {0, 0, 0, 0};
    pw_block_cursor c;
    pw_block_begin(&c, view.buf, (size_t)view.len, &k);
    for (int finished = 0; !finished;) {
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
        if (!out)
            goto done;
        size_t out_len = 0, meta_n = 0;
        Py_BEGIN_ALLOW_THREADS
        finished = pw_block_walk(&cfg, &c, (uint8_t *)PyBytes_AS_STRING(out), cap, &out_len,
                                 meta, meta_cap, &meta_n, &k);
        Py_END_ALLOW_THREADS
        if (meta_n == 0) {
            Py_DECREF(out);
            continue;
        }
        if (_PyBytes_Resize(&out, (Py_ssize_t)out_len) < 0)
            goto done;
        PyObject *t = batch_tuple(linktype, snaplen, out, meta, meta_n);
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    PyObject *d = counts_dict(&k);
    if (d)
        res = Py_BuildValue("(ON)", list, d);
done:
    if (have_prog)
        pcap_freecode(&prog);
    free(meta);
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return res;
}

#ifdef __linux__
/* ---- Capture ---------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *ifname;
    int fd, wakefd;
    int busy, closing, closed;
    uint8_t *ring;
    size_t ring_len;
    uint32_t block_size, block_nr, cur;
    int cur_active; /* cursor holds a block partly copied into earlier batches */
    pw_block_cursor cursor;
    pw_ring_cfg cfg;
    struct bpf_program uprog;
    int have_uprog;
    int ifindex, fanout_group;
    pw_meta *meta;
    size_t meta_cap, batch_cap;
    PyObject *pool[PW_CAP_POOL];
    pw_ring_counts k;
    uint64_t kernel_packets, kernel_drops, freeze_q;
} PwCapture;

/* OSError(errno, "<what>: <strerror><hint>", ifname): PermissionError, FileNotFoundError,
 * ... by errno, with the interface as the exception's filename. */
static void set_oserror(PwCapture *self, int err, const char *what)
{
    const char *hint = "";
    if (err == EPERM || err == EACCES)
        hint = " (capturing needs CAP_NET_RAW, which is enough: promiscuous mode, fanout and "
               "the filter need nothing more; run as root or grant it, e.g. "
               "AmbientCapabilities=CAP_NET_RAW)";
    else if (err == ENODEV || err == ENXIO)
        hint = " (no such interface)";
    else if (err == ENETDOWN)
        hint = " (the interface went down)";
    PyObject *msg = PyUnicode_FromFormat("%s: %s%s", what, strerror(err), hint);
    if (!msg)
        return;
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iNO", err, msg,
                                          self->ifname ? self->ifname : Py_None);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static void read_kernel_stats(PwCapture *self)
{
    struct tpacket_stats_v3 st;
    socklen_t len = sizeof st;
    if (self->fd < 0)
        return;
    memset(&st, 0, sizeof st);
    /* the kernel resets its counters on every read: accumulate */
    if (getsockopt(self->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
        self->kernel_packets += st.tp_packets;
        self->kernel_drops += st.tp_drops;
        self->freeze_q += st.tp_freeze_q_cnt;
    }
}

static void teardown(PwCapture *self)
{
    if (self->closed)
        return;
    read_kernel_stats(self);
    if (self->ring && self->ring != MAP_FAILED)
        munmap(self->ring, self->ring_len);
    self->ring = NULL;
    if (self->fd >= 0)
        close(self->fd);
    if (self->wakefd >= 0)
        close(self->wakefd);
    self->fd = self->wakefd = -1;
    if (self->have_uprog)
        pcap_freecode(&self->uprog);
    self->have_uprog = 0;
    self->cfg.uprog = NULL;
    free(self->meta);
    self->meta = NULL;
    for (int i = 0; i < PW_CAP_POOL; i++)
        Py_CLEAR(self->pool[i]);
    self->closed = 1;
}

static int fanout_mode(const char *s, int *mode)
{
    if (!strcmp(s, "hash"))
        *mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG;
    else if (!strcmp(s, "hash-nodefrag"))
        *mode = PACKET_FANOUT_HASH;
    else if (!strcmp(s, "cpu"))
        *mode = PACKET_FANOUT_CPU;
    else if (!strcmp(s, "lb"))
        *mode = PACKET_FANOUT_LB;
    else
        return -1;
    return 0;
}

static int capture_open(PwCapture *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ifname", "snaplen", "bpf", "ring_bytes", "block_bytes",
                             "fanout_group", "fanout_mode", "promisc", "block_timeout_ms", NULL};
    PyObject *ifname;
    int snaplen = 262144, fanout_group = 0, promisc = 1, tmo = 100;
    const char *bpf = "", *fmode = "hash";
    long long ring_bytes = 64LL << 20, block_bytes = 1LL << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|isLLispi", kwlist, &ifname, &snaplen, &bpf,
                                     &ring_bytes, &block_bytes, &fanout_group, &fmode, &promisc,
                                     &tmo))
        return -1;
    self->fd = self->wakefd = -1;
    Py_ssize_t nlen;
    const char *name = PyUnicode_AsUTF8AndSize(ifname, &nlen);
    if (!name)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    int mode = 0;
    if (nlen == 0 || nlen >= IFNAMSIZ || strlen(name) != (size_t)nlen || strchr(name, '/')) {
        PyErr_Format(PyExc_ValueError, "invalid interface name %R", ifname);
        return -1;
    }
    if (snaplen < 1 || (uint32_t)snaplen > PW_MAX_CAPLEN) {
        PyErr_Format(PyExc_ValueError, "snaplen %d: must be 1..%u", snaplen, PW_MAX_CAPLEN);
        return -1;
    }
    if (block_bytes < page || block_bytes % page || block_bytes > (1LL << 30) ||
        block_bytes < (long long)PW_FRAME_ROOM + snaplen) {
        PyErr_Format(PyExc_ValueError,
                     "block_bytes %lld: must be a multiple of the page size (%ld), at most 1 GiB, "
                     "and hold one frame of snaplen %d bytes plus %d bytes of headers",
                     block_bytes, page, snaplen, PW_FRAME_ROOM);
        return -1;
    }
    if (ring_bytes < block_bytes || ring_bytes / block_bytes > UINT32_MAX / 2) {
        PyErr_Format(PyExc_ValueError, "ring_bytes %lld: must be at least block_bytes (%lld)",
                     ring_bytes, block_bytes);
        return -1;
    }
    if (fanout_group < 0 || fanout_group > 0xFFFF || fanout_mode(fmode, &mode) < 0) {
        PyErr_Format(PyExc_ValueError,
                     "fanout_group %d / fanout_mode '%s': group 0 (none) .. 65535, mode 'hash', "
                     "'hash-nodefrag', 'cpu' or 'lb'",
                     fanout_group, fmode);
        return -1;
    }
    if (tmo < 0) {
        PyErr_Format(PyExc_ValueError, "block_timeout_ms %d: must be >= 0", tmo);
        return -1;
    }
    Py_INCREF(ifname);
    self->ifname = ifname;
    self->fanout_group = fanout_group;
    int any = !strcmp(name, "any");

    /* interface index and hardware type, asked through a raw packet socket (so a missing
     * privilege is reported first, as libpcap does) */
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_oserror(self, errno, "socket(AF_PACKET)");
        return -1;
    }
    self->fd = fd;
    int arphrd = -1;
    self->ifindex = 0;
    if (!any) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        memcpy(ifr.ifr_name, name, strlen(name));
        if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
            set_oserror(self, errno, "SIOCGIFINDEX");
            return -1;
        }
        self->ifindex = ifr.ifr_ifindex;
        if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
            set_oserror(self, errno, "SIOCGIFHWADDR");
            return -1;
        }
        arphrd = ifr.ifr_hwaddr.sa_family;
    }
    /* ARPHRD -> LINKTYPE as libpcap maps them; anything else is captured cooked (LINUX_SLL,
     * built from the kernel's sockaddr_ll), like libpcap does for such devices and "any" */
    uint32_t linktype;
    int cooked = 0;
    switch (arphrd) {
    case ARPHRD_ETHER:
    case ARPHRD_LOOPBACK: /* Linux's loopback has (all-zero) Ethernet headers */
        linktype = 1;
        break;
    case ARPHRD_NONE: /* tun */
    case ARPHRD_RAWIP:
        linktype = 101;
        break;
    default:
        linktype = 113;
        cooked = 1;
        break;
    }
    if (cooked) {
        close(fd);
        fd = self->fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            set_oserror(self, errno, "socket(AF_PACKET, SOCK_DGRAM)");
            return -1;
        }
    }
    self->cfg.linktype = linktype;
    self->cfg.snaplen = (uint32_t)snaplen;
    self->cfg.lclass = pw_link_class(linktype);
    self->cfg.cooked = cooked;
    self->cfg.lo_ifindex = -1;
    if (any || arphrd == ARPHRD_LOOPBACK) {
        unsigned lo = if_nametoindex("lo");
        self->cfg.lo_ifindex = lo ? (int64_t)lo : -1;
    }

    /* The kernel program. libpcap's code for the link type runs in the kernel, except where
     * the kernel sees different bytes than the stored record: cooked frames (the kernel has no
     * SLL header) and expressions naming VLANs (the kernel took the tag out of the frame).
     * Those run here on the finished record; the kernel program then only cuts to snaplen. */
    int userland = bpf[0] && (cooked || strstr(bpf, "vlan"));
    struct bpf_program kprog;
    int have_kprog = 0;
    char err[PCAP_ERRBUF_SIZE];
    if (bpf[0]) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = pw_bpf_compile(pw_linktype_to_dlt(linktype), snaplen, bpf, &self->uprog, err,
                            sizeof err);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            PyErr_Format(PyExc_ValueError, "capture filter for %U: %s", ifname, err);
            return -1;
        }
        if (userland) {
            self->have_uprog = 1;
            self->cfg.uprog = &self->uprog;
        } else {
            kprog = self->uprog;
            have_kprog = 1;
        }
    }
    struct sock_filter cut = BPF_STMT(BPF_RET | BPF_K,
                                      (uint32_t)(cooked ? (snaplen > (int)PW_SLL_HDR_LEN
                                                               ? snaplen - (int)PW_SLL_HDR_LEN
                                                               : 1)
                                                        : snaplen));
    struct sock_fprog fprog;
    if (have_kprog) {
        fprog.len = (unsigned short)kprog.bf_len;
        fprog.filter = (struct sock_filter *)kprog.bf_insns; /* same layout as bpf_insn */
    } else {
        fprog.len = 1;
        fprog.filter = &cut;
    }
    int rc = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog);
    int saved = errno;
    if (rc < 0 && have_kprog && (saved == EINVAL || saved == ENOMEM)) {
        /* too long for the kernel (BPF_MAXINSNS) or refused by its checker: run it here */
        self->have_uprog = 1;
        self->cfg.uprog = &self->uprog;
        have_kprog = 0;
        fprog.len = 1;
        fprog.filter = &cut;
        rc = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog);
        saved = errno;
    }
    if (have_kprog)
        pcap_freecode(&kprog);
    if (rc < 0) {
        set_oserror(self, saved, "SO_ATTACH_FILTER");
        return -1;
    }

    int v = TPACKET_V3;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0) {
        set_oserror(self, errno, "PACKET_VERSION TPACKET_V3");
        return -1;
    }
    struct tpacket_req3 req;
    memset(&req, 0, sizeof req);
    req.tp_block_size = (unsigned)block_bytes;
    req.tp_block_nr = (unsigned)(ring_bytes / block_bytes);
    req.tp_frame_size = 2048; /* V3 frames are variable; the kernel only checks the arithmetic */
    req.tp_frame_nr = (req.tp_block_size / req.tp_frame_size) * req.tp_block_nr;
    req.tp_retire_blk_tov = (unsigned)tmo;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) {
        char what[96];
        snprintf(what, sizeof what, "PACKET_RX_RING (%u blocks of %u bytes)", req.tp_block_nr,
                 req.tp_block_size);
        set_oserror(self, errno, what);
        return -1;
    }
    self->block_size = req.tp_block_size;
    self->block_nr = req.tp_block_nr;
    self->ring_len = (size_t)req.tp_block_size * req.tp_block_nr;
    self->ring = mmap(NULL, self->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (self->ring == MAP_FAILED) {
        self->ring = NULL;
        set_oserror(self, errno, "mmap of the ring");
        return -1;
    }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = self->ifindex;
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        set_oserror(self, errno, "bind");
        return -1;
    }
    if (promisc && !any) {
        struct packet_mreq mr;
        memset(&mr, 0, sizeof mr);
        mr.mr_ifindex = self->ifindex;
        mr.mr_type = PACKET_MR_PROMISC;
        if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
            set_oserror(self, errno, "PACKET_ADD_MEMBERSHIP (promiscuous mode)");
            return -1;
        }
    }
    if (fanout_group) {
        int fo = (fanout_group & 0xFFFF) | (mode << 16);
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &fo, sizeof fo) < 0) {
            char what[96];
            snprintf(what, sizeof what, "PACKET_FANOUT (group %d, mode %s)", fanout_group,
                     fmode);
            set_oserror(self, errno, what);
            return -1;
        }
    }
    self->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->wakefd < 0) {
        set_oserror(self, errno, "eventfd");
        return -1;
    }
    self->batch_cap = PW_CAP_BATCH;
    if (self->batch_cap < PW_REC_OVERHEAD + (size_t)snaplen)
        self->batch_cap = PW_REC_OVERHEAD + (size_t)snaplen;
    self->meta_cap = self->batch_cap / 16 + 1; /* a record is at least 16 bytes */
    self->meta = malloc(self->meta_cap * sizeof(pw_meta));
    if (!self->meta) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int Capture_init(PwCapture *self, PyObject *args, PyObject *kwds)
{
    if (self->ifname) {
        PyErr_SetString(PyExc_RuntimeError, "Capture.__init__ called twice");
        return -1;
    }
    if (capture_open(self, args, kwds) < 0) {
        if (self->ifname)
            teardown(self); /* a half-open capture is a closed one */
        return -1;
    }
    return 0;
}

static void Capture_dealloc(PwCapture *self)
{
    if (self->ifname || self->fd >= 0)
        teardown(self);
    Py_XDECREF(self->ifname);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Capture_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PwCapture *self = (PwCapture *)PyType_GenericNew(type, args, kwds);
    if (self)
        self->fd = self->wakefd = -1;
    return (PyObject *)self;
}

static int check_open(PwCapture *self, const char *what)
{
    if (!self->ifname) {
        PyErr_SetString(PyExc_RuntimeError, "Capture not initialised");
        return -1;
    }
    if (self->closed || self->closing) {
        PyErr_Format(PyExc_ValueError, "capture on %U: %s() after close()", self->ifname, what);
        return -1;
    }
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "capture on %U: %s() while poll() runs in another thread",
                     self->ifname, what);
        return -1;
    }
    return 0;
}

static inline uint8_t *block_at(PwCapture *self, uint32_t i)
{
    return self->ring + (size_t)i * self->block_size;
}

static inline int block_ready(PwCapture *self, uint32_t i)
{
    uint32_t *st = (uint32_t *)(block_at(self, i) + PW_BD_STATUS);
    return (__atomic_load_n(st, __ATOMIC_ACQUIRE) & TP_STATUS_USER) != 0;
}

static inline void block_release(PwCapture *self, uint32_t i)
{
    uint32_t *st = (uint32_t *)(block_at(self, i) + PW_BD_STATUS);
    __atomic_store_n(st, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

/* A records buffer of batch_cap bytes: a recycled one the caller has dropped, else new. */
static PyObject *take_buffer(PwCapture *self)
{
    for (int i = 0; i < PW_CAP_POOL; i++) {
        PyObject *o = self->pool[i];
        if (o && Py_REFCNT(o) == 1) {
            self->pool[i] = NULL;
            Py_SET_SIZE(o, (Py_ssize_t)self->batch_cap);
            return o;
        }
    }
    return PyBytes_FromStringAndSize(NULL, (Py_ssize_t)self->batch_cap);
}

/* Hand the filled buffer out: shrunk in place (nobody else holds it), and kept for reuse
 * when the caller has dropped it (as Reader does: fresh pages cost more than copying). */
static int finish_buffer(PwCapture *self, PyObject **out, size_t len)
{
    if (len < self->batch_cap / 4) {
        return _PyBytes_Resize(out, (Py_ssize_t)len);
    }
    Py_SET_SIZE(*out, (Py_ssize_t)len);
    PyBytes_AS_STRING(*out)[len] = '\0';
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    ((PyBytesObject *)*out)->ob_shash = -1;
#pragma GCC diagnostic pop
    int slot = -1;
    for (int i = 0; i < PW_CAP_POOL; i++) {
        if (!self->pool[i]) {
            slot = i;
            break;
        }
        if (Py_REFCNT(self->pool[i]) > 1 && slot < 0)
            slot = i; /* still held by the caller: forget it */
    }
    if (slot < 0)
        slot = 0;
    Py_XDECREF(self->pool[slot]);
    Py_INCREF(*out);
    self->pool[slot] = *out;
    return 0;
}

/* Fill one batch from consecutive ready blocks (no GIL). Returns the blocks finished. */
static uint32_t fill(PwCapture *self, uint8_t *out, size_t *out_len, size_t *meta_n,
                     uint32_t max_blocks, int *full)
{
    uint32_t done = 0;
    *full = 0;
    for (;;) {
        if (!self->cur_active) {
            if (done >= max_blocks || !block_ready(self, self->cur))
                return done;
            pw_block_begin(&self->cursor, block_at(self, self->cur), self->block_size,
                           &self->k);
            self->cur_active = 1;
        }
        if (!pw_block_walk(&self->cfg, &self->cursor, out, self->batch_cap, out_len,
                           self->meta, self->meta_cap, meta_n, &self->k)) {
            *full = 1;
            return done;
        }
        block_release(self, self->cur); /* copied: back to the kernel at once */
        self->cur = (self->cur + 1) % self->block_nr;
        self->cur_active = 0;
        done++;
    }
}

static PyObject *Capture_poll(PwCapture *self, PyObject *args)
{
    int timeout;
    if (!PyArg_ParseTuple(args, "i", &timeout))
        return NULL;
    if (check_open(self, "poll") < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    self->busy = 1;
    if (!self->cur_active && !block_ready(self, self->cur)) {
        struct pollfd pfd[2] = {{self->fd, POLLIN | POLLERR, 0}, {self->wakefd, POLLIN, 0}};
        int rc, err;
        Py_BEGIN_ALLOW_THREADS
        rc = poll(pfd, 2, timeout);
        err = errno;
        Py_END_ALLOW_THREADS
        if (self->closing)
            goto out;
        if (rc < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                goto out;
            }
            set_oserror(self, err, "poll");
            goto fail;
        }
        if (rc > 0 && (pfd[0].revents & POLLERR) && !block_ready(self, self->cur)) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (getsockopt(self->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr) {
                set_oserror(self, soerr, "capture");
                goto fail;
            }
        }
    }
    uint32_t blocks = 0;
    for (int nb = 0; nb < PW_CAP_MAX_BATCHES && blocks < self->block_nr; nb++) {
        if (!self->cur_active && !block_ready(self, self->cur))
            break;
        PyObject *out = take_buffer(self);
        if (!out)
            goto fail;
        size_t out_len = 0, meta_n = 0;
        int full;
        uint8_t *buf = (uint8_t *)PyBytes_AS_STRING(out);
        uint32_t limit = self->block_nr - blocks;
        Py_BEGIN_ALLOW_THREADS
        blocks += fill(self, buf, &out_len, &meta_n, limit, &full);
        Py_END_ALLOW_THREADS
        if (meta_n == 0) {
            Py_DECREF(out);
            if (!full)
                continue;
            break; /* cannot happen: an empty buffer takes one record */
        }
        if (finish_buffer(self, &out, out_len) < 0)
            goto fail;
        PyObject *t = batch_tuple(self->cfg.linktype, self->cfg.snaplen, out, self->meta,
                                  meta_n);
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
        if (self->closing)
            break;
    }
out:
    self->busy = 0;
    if (self->closing)
        teardown(self);
    return list;
fail:
    self->busy = 0;
    if (self->closing)
        teardown(self);
    Py_DECREF(list);
    return NULL;
}

static PyObject *Capture_stats(PwCapture *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->ifname) {
        PyErr_SetString(PyExc_RuntimeError, "Capture not initialised");
        return NULL;
    }
    if (!self->closed)
        read_kernel_stats(self);
    return Py_BuildValue("{sKsKsKsKsKsKsK}", "packets", (unsigned long long)self->k.packets,
                         "kernel_drops", (unsigned long long)self->kernel_drops, "freeze_q",
                         (unsigned long long)self->freeze_q, "kernel_packets",
                         (unsigned long long)self->kernel_packets, "userland_filtered",
                         (unsigned long long)self->k.filtered, "bad_frames",
                         (unsigned long long)self->k.bad_frames, "bad_blocks",
                         (unsigned long long)self->k.bad_blocks);
}

static PyObject *Capture_close(PwCapture *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->ifname || self->closed)
        Py_RETURN_NONE;
    if (self->busy) {
        /* poll() runs in another thread: wake it; it closes on its way out */
        self->closing = 1;
        uint64_t one = 1;
        if (write(self->wakefd, &one, sizeof one) < 0) {
            /* the counter is non-zero already: poll() wakes anyway */
        }
        Py_RETURN_NONE;
    }
    teardown(self);
    Py_RETURN_NONE;
}

static PyObject *Capture_fileno(PwCapture *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->ifname || self->closed) {
        PyErr_SetString(PyExc_ValueError, "capture is closed");
        return NULL;
    }
    return PyLong_FromLong(self->fd);
}

static PyObject *Capture_enter(PwCapture *self, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *Capture_exit(PwCapture *self, PyObject *Py_UNUSED(args))
{
    return Capture_close(self, NULL);
}

static PyObject *Capture_get_linktype(PwCapture *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLong(self->cfg.linktype);
}

static PyObject *Capture_get_snaplen(PwCapture *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLong(self->cfg.snaplen);
}

static PyObject *Capture_get_ifname(PwCapture *self, void *c)
{
    (void)c;
    if (!self->ifname)
        Py_RETURN_NONE;
    Py_INCREF(self->ifname);
    return self->ifname;
}

static PyObject *Capture_get_ifindex(PwCapture *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->ifindex);
}

static PyObject *Capture_get_closed(PwCapture *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed || self->closing);
}

static PyObject *Capture_get_ring(PwCapture *self, void *c)
{
    (void)c;
    return Py_BuildValue("(II)", self->block_nr, self->block_size);
}

static PyObject *Capture_get_userland_filter(PwCapture *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->have_uprog);
}

static PyMethodDef Capture_methods[] = {
    {"poll", (PyCFunction)Capture_poll, METH_VARARGS,
     "poll(timeout_ms) -> list[Batch]: wait up to timeout_ms (-1: forever) for retired ring\n"
     "blocks, copy them into batches (linktype, snaplen, 9, records, meta, -1) and give the\n"
     "blocks back to the kernel. [] on timeout, after close() from another thread, or after\n"
     "a signal whose Python handler did not raise."},
    {"stats", (PyCFunction)Capture_stats, METH_NOARGS,
     "stats() -> dict: cumulative counters: packets (records returned), kernel_drops and\n"
     "freeze_q (PACKET_STATISTICS, accumulated), kernel_packets (the kernel's tp_packets:\n"
     "queued + dropped), userland_filtered, bad_frames, bad_blocks."},
    {"close", (PyCFunction)Capture_close, METH_NOARGS,
     "close(): release the ring and the socket (idempotent; from another thread it wakes\n"
     "poll(), which closes on its way out)."},
    {"fileno", (PyCFunction)Capture_fileno, METH_NOARGS, "the packet socket's descriptor"},
    {"__enter__", (PyCFunction)Capture_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Capture_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Capture_getset[] = {
    {"linktype", (getter)Capture_get_linktype, NULL, "LINKTYPE_ of the records", NULL},
    {"snaplen", (getter)Capture_get_snaplen, NULL, "snapshot length", NULL},
    {"ifname", (getter)Capture_get_ifname, NULL, "interface name", NULL},
    {"ifindex", (getter)Capture_get_ifindex, NULL, "interface index (0 for 'any')", NULL},
    {"closed", (getter)Capture_get_closed, NULL, "True after close()", NULL},
    {"ring", (getter)Capture_get_ring, NULL, "(blocks, block_bytes) of the ring", NULL},
    {"userland_filter", (getter)Capture_get_userland_filter, NULL,
     "True when the BPF runs on the records here instead of in the kernel", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define CAPTURE_DOC                                                                          \
    "Capture(ifname, snaplen=262144, bpf='', ring_bytes=64 MiB, block_bytes=1 MiB,\n"        \
    "        fanout_group=0, fanout_mode='hash', promisc=True, block_timeout_ms=100)\n\n"     \
    "Live capture through an AF_PACKET TPACKET_V3 ring (Linux). The BPF is compiled by\n"    \
    "libpcap and attached in the kernel. fanout_group != 0 joins a PACKET_FANOUT group\n"    \
    "('hash' = flow hash with IP defragmentation, 'hash-nodefrag', 'cpu', 'lb').\n"          \
    "poll(timeout_ms) returns batches shaped like Reader.feed()'s. See core/native/README.md."

PyTypeObject PwCaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pcapwire._native.Capture",
    .tp_basicsize = sizeof(PwCapture),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = CAPTURE_DOC,
    .tp_new = Capture_new,
    .tp_init = (initproc)Capture_init,
    .tp_dealloc = (destructor)Capture_dealloc,
    .tp_methods = Capture_methods,
    .tp_getset = Capture_getset,
};

#else /* not Linux: the type exists and says why it cannot capture */
static int Capture_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    (void)args;
    (void)kwds;
    PyErr_SetString(PyExc_OSError, "live capture needs Linux (AF_PACKET)");
    return -1;
}

PyTypeObject PwCaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pcapwire._native.Capture",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Live capture (Linux only).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Capture_init,
};
#endif
