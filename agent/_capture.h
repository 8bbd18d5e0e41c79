/* Live capture before the fold, compiled: TPACKET_V3 ring blocks -> pcap records (included by _hotpath.c).
 *
 * **capture** -> decode. agent/capture/ring.py maps a TPACKET_V3 ring per captured interface; the
 * capture worker hands each ring to CaptureFilter.read_ring, which walks the blocks the kernel has
 * handed over, and per frame does what agent/capture/prefilter.py does in Python (the reference,
 * what runs without a compiler): locate the IP header (VLAN/QinQ tags skipped), skip a copy already
 * seen on another interface (Dedup), skip UDP packets and TCP data segments past the flow's budget
 * (FlowBudget). What is kept is appended as classic pcap records (little-endian, nanosecond stamps)
 * that the fold reads like a pcap chunk in replay (ingest_pcap), then the block goes back to the
 * kernel. The GIL is released while blocks are read: several workers read their rings in parallel.
 * Fingerprints are SipHash-1-3 with a random key, so nobody can aim a packet at another's
 * fingerprint (Python's hash() is keyed SipHash too).
 *
 *   CaptureFilter(seed16, udp, tcp, dedup_period, dedup_max, budget_period, budget_max)
 *   .read_ring(mem, block_size, block_nr, index, off, now, max_records) -> (index, blocks, frames, ready)
 *   .take() -> bytes: the records kept so far
 */
#include <math.h>

#define TP_STATUS_KERNEL 0
#define TP_STATUS_USER 1
#define BLOCK_HDR 48        /* struct tpacket_block_desc */
#define FRAME_HDR 28        /* struct tpacket3_hdr up to tp_net */
#define IPV4_FRAGMENT (-1)  /* locate_ip's protocol for an IPv4 fragment */

/* --------------------------------------------------------------- SipHash-1-3 */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                              \
    do {                                                                      \
        v0 += v1, v1 = ROTL64(v1, 13), v1 ^= v0, v0 = ROTL64(v0, 32);         \
        v2 += v3, v3 = ROTL64(v3, 16), v3 ^= v2;                              \
        v0 += v3, v3 = ROTL64(v3, 21), v3 ^= v0;                              \
        v2 += v1, v1 = ROTL64(v1, 17), v1 ^= v2, v2 = ROTL64(v2, 32);         \
    } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *m, size_t len) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = 0;
        for (int j = 0; j < 8; j++) w |= (uint64_t)m[i + j] << (8 * j);
        v3 ^= w;
        SIPROUND;
        v0 ^= w;
    }
    uint64_t b = (uint64_t)len << 56;
    for (int j = 0; i + j < len; j++) b |= (uint64_t)m[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------- hash sets and counters by 64-bit key */

typedef struct {
    uint64_t *keys;  /* 0 = empty slot (a key of 0 is stored as 1) */
    uint32_t *counts;  /* only when counted */
    size_t cap, len;
    int counted;
} HTab;

#define HTAB_MIN 1024

static int htab_alloc(HTab *h, size_t cap) {
    uint64_t *keys = calloc(cap, sizeof *keys);
    uint32_t *counts = h->counted ? calloc(cap, sizeof *counts) : NULL;
    if (keys == NULL || (h->counted && counts == NULL)) {
        free(keys), free(counts);
        return -1;
    }
    free(h->keys), free(h->counts);
    h->keys = keys, h->counts = counts, h->cap = cap, h->len = 0;
    return 0;
}

/* The slot of `key`: where it is, or the empty slot where it would go. */
static inline size_t htab_slot(const HTab *h, uint64_t key) {
    size_t i = (size_t)(key ^ key >> 29) & (h->cap - 1);
    while (h->keys[i] != 0 && h->keys[i] != key) i = (i + 1) & (h->cap - 1);
    return i;
}

static int htab_grow(HTab *h) {
    HTab bigger = {.counted = h->counted};
    if (htab_alloc(&bigger, h->cap * 2) < 0) return -1;
    for (size_t i = 0; i < h->cap; i++) {
        if (h->keys[i] == 0) continue;
        size_t j = htab_slot(&bigger, h->keys[i]);
        bigger.keys[j] = h->keys[i];
        if (h->counted) bigger.counts[j] = h->counts[i];
    }
    bigger.len = h->len;
    free(h->keys), free(h->counts);
    *h = bigger;
    return 0;
}

/* Empty it; a table grown far past what it held gives the memory back. */
static int htab_clear(HTab *h) {
    size_t want = HTAB_MIN;
    while (want < h->len * 4) want *= 2;
    if (h->cap > want * 4) return htab_alloc(h, want);
    memset(h->keys, 0, h->cap * sizeof *h->keys);
    if (h->counted) memset(h->counts, 0, h->cap * sizeof *h->counts);
    h->len = 0;
    return 0;
}

/* --------------------------------------------------------------- the filter */

typedef struct {
    PyObject_HEAD
    uint64_t k0, k1;
    HTab current, previous, budget;  /* Dedup's two generations, FlowBudget's counts */
    double dedup_period, rotate_at, budget_period, reset_at;
    Py_ssize_t dedup_max, budget_max;
    long long udp, tcp;  /* the budget per flow direction per budget_period */
    long long duplicates, limited_udp, limited_tcp, malformed, frames;
    uint8_t *out;  /* pcap records kept, not yet taken */
    size_t out_len, out_cap;
    Py_ssize_t pending;  /* records in out */
    int busy;
} CaptureFilter;

typedef struct {  /* locate_ip's answer */
    int proto;
    size_t l4;
    const uint8_t *addrs, *fixed;
    size_t alen, flen;
} IpAt;

/* = agent/capture/prefilter.py locate_ip: 0 when the frame holds no IP header it can read. */
static int locate_ip(const uint8_t *f, size_t n, size_t off, IpAt *ip) {
    if (off) {
        if (n < off) return 0;
        unsigned etype = u16(f + off - 2);
        while (etype == 0x8100 || etype == 0x88A8 || etype == 0x9100) {
            if (n < off + 4) return 0;
            etype = u16(f + off + 2);
            off += 4;
        }
        if (etype != 0x0800 && etype != 0x86DD) return 0;
    }
    if (n < off + 20) return 0;
    unsigned version = f[off] >> 4, ihl = (f[off] & 15u) * 4;
    if (version == 4 && ihl >= 20) {
        ip->proto = (f[off + 6] & 0x3F) || f[off + 7] ? IPV4_FRAGMENT : f[off + 9];
        ip->l4 = off + ihl;
        ip->addrs = f + off + 12, ip->alen = 8;
        ip->fixed = f + off + 2, ip->flen = 6;
        return 1;
    }
    if (version == 6 && n >= off + 40) {
        ip->proto = f[off + 6];
        ip->l4 = off + 40;
        ip->addrs = f + off + 8, ip->alen = 32;
        ip->fixed = f + off + 4, ip->flen = 3;
        return 1;
    }
    return 0;
}

/* The hash of a + b + frame[at:at+most] (the slice clamped to the frame, as in Python). */
static uint64_t key_of(CaptureFilter *cf, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                       const uint8_t *f, size_t n, size_t at, size_t most) {
    uint8_t buf[64];
    size_t len = 0, take = at >= n ? 0 : (n - at < most ? n - at : most);
    memcpy(buf, a, alen), len += alen;
    memcpy(buf + len, b, blen), len += blen;
    memcpy(buf + len, f + at, take), len += take;
    uint64_t h = siphash13(cf->k0, cf->k1, buf, len);
    return h ? h : 1;
}

/* = Dedup.seen: 1 when the frame is a copy seen within the last 1-2 periods; -1 out of memory. */
static int dedup_seen(CaptureFilter *cf, const uint8_t *f, size_t n, const IpAt *ip, int located, double now) {
    if (now >= cf->rotate_at || (Py_ssize_t)cf->current.len >= cf->dedup_max) {
        HTab old = cf->current;
        cf->current = cf->previous, cf->previous = old;
        if (!(now < cf->rotate_at + cf->dedup_period) && htab_clear(&cf->previous) < 0) return -1;
        if (htab_clear(&cf->current) < 0) return -1;
        cf->rotate_at = now + cf->dedup_period;
    }
    if (!located) return 0;
    uint64_t fp = key_of(cf, ip->fixed, ip->flen, ip->addrs, ip->alen, f, n, ip->l4, 18);
    if (cf->current.keys[htab_slot(&cf->current, fp)] == fp || cf->previous.keys[htab_slot(&cf->previous, fp)] == fp) {
        cf->duplicates++;
        return 1;
    }
    if ((cf->current.len + 1) * 2 > cf->current.cap && htab_grow(&cf->current) < 0) return -1;
    cf->current.keys[htab_slot(&cf->current, fp)] = fp;
    cf->current.len++;
    return 0;
}

/* = FlowBudget.allow: 1 when the frame is within its flow direction's budget; -1 out of memory. */
static int budget_allow(CaptureFilter *cf, const uint8_t *f, size_t n, const IpAt *ip, int located, double now) {
    if (now >= cf->reset_at || (Py_ssize_t)cf->budget.len >= cf->budget_max) {
        if (htab_clear(&cf->budget) < 0) return -1;
        cf->reset_at = now + cf->budget_period;
    }
    if (!located) return 1;
    long long limit;
    long long *limited;
    if (ip->proto == 6) {
        if (n < ip->l4 + 14 || f[ip->l4 + 13] & (TCP_SYN | TCP_FIN | TCP_RST)) return 1;
        limit = cf->tcp, limited = &cf->limited_tcp;
    } else if (ip->proto == 17) {
        limit = cf->udp, limited = &cf->limited_udp;
    } else {
        return 1;
    }
    uint64_t key = key_of(cf, ip->addrs, ip->alen, NULL, 0, f, n, ip->l4, 4);
    size_t i = htab_slot(&cf->budget, key);
    long long count = cf->budget.keys[i] == key ? cf->budget.counts[i] : 0;
    if (count >= limit) {
        (*limited)++;
        return 0;
    }
    if (cf->budget.keys[i] != key) {
        if ((cf->budget.len + 1) * 2 > cf->budget.cap) {
            if (htab_grow(&cf->budget) < 0) return -1;
            i = htab_slot(&cf->budget, key);
        }
        cf->budget.keys[i] = key;
        cf->budget.len++;
    }
    cf->budget.counts[i] = (uint32_t)(count + 1);
    return 1;
}

static inline void put_le32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)v, b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)(v >> 16), b[3] = (uint8_t)(v >> 24);
}

static int append_record(CaptureFilter *cf, double now, const uint8_t *f, uint32_t snap, uint32_t len) {
    if (cf->out_len + 16 + snap > cf->out_cap) {
        size_t cap = cf->out_cap ? cf->out_cap : 1 << 16;
        while (cf->out_len + 16 + snap > cap) cap *= 2;
        uint8_t *out = realloc(cf->out, cap);
        if (out == NULL) return -1;
        cf->out = out, cf->out_cap = cap;
    }
    uint8_t *r = cf->out + cf->out_len;
    double sec = floor(now);
    put_le32(r, (uint32_t)sec);
    put_le32(r + 4, (uint32_t)((now - sec) * 1e9));
    put_le32(r + 8, snap);
    put_le32(r + 12, len);
    memcpy(r + 16, f, snap);
    cf->out_len += 16 + snap;
    cf->pending++;
    return 0;
}

static inline uint32_t ne32(const uint8_t *b) {  /* the kernel's headers are in host order */
    uint32_t v;
    memcpy(&v, b, 4);
    return v;
}

static inline unsigned ne16(const uint8_t *b) {
    uint16_t v;
    memcpy(&v, b, 2);
    return v;
}

/* One block (= ring.py read_block): its frames through locate/dedup/budget. 0, or -1 out of memory. */
static int filter_block(CaptureFilter *cf, const uint8_t *b, size_t size, size_t off, double now) {
    uint32_t count = ne32(b + 12);
    size_t pos = ne32(b + 16);
    for (uint32_t k = 0; k < count; k++) {
        if (pos < BLOCK_HDR || pos > size - FRAME_HDR) {
            cf->malformed++;
            return 0;
        }
        const uint8_t *h = b + pos;
        uint32_t next = ne32(h), snap = ne32(h + 12), len = ne32(h + 16);
        size_t mac = ne16(h + 24);
        if (mac > size - pos || snap > size - pos - mac) {
            cf->malformed++;
            return 0;
        }
        const uint8_t *f = h + mac;
        cf->frames++;
        if (snap > off) {
            IpAt ip;
            int located = locate_ip(f, snap, off, &ip);
            int seen = dedup_seen(cf, f, snap, &ip, located, now);
            if (seen < 0) return -1;
            if (!seen) {
                int allow = budget_allow(cf, f, snap, &ip, located, now);
                if (allow < 0 || (allow && append_record(cf, now, f, snap, len) < 0)) return -1;
            }
        }
        if (next == 0 && k + 1 < count) {
            cf->malformed++;
            return 0;
        }
        pos += next;
    }
    return 0;
}

static PyObject *cf_read_ring(CaptureFilter *self, PyObject *args) {
    Py_buffer mem;
    Py_ssize_t size, nblocks, index, off, most;
    double now;
    if (!PyArg_ParseTuple(args, "w*nnnndn", &mem, &size, &nblocks, &index, &off, &now, &most)) return NULL;
    if (size < BLOCK_HDR + FRAME_HDR || nblocks < 1 || size > mem.len / nblocks || index < 0 || index >= nblocks ||
        off < 0 || self->busy) {
        PyBuffer_Release(&mem);
        PyErr_SetString(self->busy ? PyExc_RuntimeError : PyExc_ValueError,
                        self->busy ? "read_ring: the filter is in use by another thread" : "read_ring: bad geometry");
        return NULL;
    }
    uint8_t *base = mem.buf;
    Py_ssize_t ready = 0, blocks = 0;
    long long frames = self->frames;
    int failed = 0;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nblocks; i++)
        ready += __atomic_load_n((uint32_t *)(base + i * size + 8), __ATOMIC_ACQUIRE) & TP_STATUS_USER;
    while (blocks < nblocks) {
        uint8_t *b = base + index * size;
        if (!(__atomic_load_n((uint32_t *)(b + 8), __ATOMIC_ACQUIRE) & TP_STATUS_USER)) break;
        failed = filter_block(self, b, (size_t)size, (size_t)off, now) < 0;
        __atomic_store_n((uint32_t *)(b + 8), TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        index = (index + 1) % nblocks, blocks++;
        if (failed || self->pending >= most) break;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&mem);
    if (failed) return PyErr_NoMemory();
    return Py_BuildValue("nnLn", index, blocks, self->frames - frames, ready);
}

static PyObject *cf_take(CaptureFilter *self, PyObject *unused) {
    PyObject *records = PyBytes_FromStringAndSize((const char *)self->out, (Py_ssize_t)self->out_len);
    if (records != NULL) self->out_len = 0, self->pending = 0;
    return records;
}

static int cf_init(CaptureFilter *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"seed", "udp", "tcp", "dedup_period", "dedup_max", "budget_period", "budget_max", NULL};
    Py_buffer seed;
    self->dedup_period = 0.5, self->dedup_max = 1 << 18, self->budget_period = 10.0, self->budget_max = 1 << 18;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*LL|dndn", names, &seed, &self->udp, &self->tcp,
                                     &self->dedup_period, &self->dedup_max, &self->budget_period, &self->budget_max))
        return -1;
    if (seed.len != 16) {
        PyBuffer_Release(&seed);
        PyErr_SetString(PyExc_ValueError, "CaptureFilter: the seed is 16 bytes");
        return -1;
    }
    memcpy(&self->k0, seed.buf, 8), memcpy(&self->k1, (uint8_t *)seed.buf + 8, 8);
    PyBuffer_Release(&seed);
    self->budget.counted = 1;
    if (self->current.keys == NULL &&
        (htab_alloc(&self->current, HTAB_MIN) < 0 || htab_alloc(&self->previous, HTAB_MIN) < 0 ||
         htab_alloc(&self->budget, HTAB_MIN) < 0)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void cf_dealloc(CaptureFilter *self) {
    HTab *tabs[] = {&self->current, &self->previous, &self->budget};
    for (int i = 0; i < 3; i++) free(tabs[i]->keys), free(tabs[i]->counts);
    free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef cf_methods[] = {
    {"read_ring", (PyCFunction)cf_read_ring, METH_VARARGS,
     "read_ring(mem, block_size, block_nr, index, off, now, max_records) -> (index, blocks, frames, ready): "
     "the blocks the kernel handed over from `index` on, until max_records are pending; ready = blocks "
     "waiting at the start."},
    {"take", (PyCFunction)cf_take, METH_NOARGS, "take() -> bytes: the pcap records kept so far."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cf_members[] = {
    {"udp", T_LONGLONG, offsetof(CaptureFilter, udp), 0, "UDP packets per flow direction per budget period."},
    {"tcp", T_LONGLONG, offsetof(CaptureFilter, tcp), 0, "TCP data segments per flow direction per period."},
    {"duplicates", T_LONGLONG, offsetof(CaptureFilter, duplicates), READONLY, "copies skipped"},
    {"limited_udp", T_LONGLONG, offsetof(CaptureFilter, limited_udp), READONLY, "UDP packets past budget"},
    {"limited_tcp", T_LONGLONG, offsetof(CaptureFilter, limited_tcp), READONLY, "TCP segments past budget"},
    {"malformed", T_LONGLONG, offsetof(CaptureFilter, malformed), READONLY, "blocks cut short by a bad header"},
    {"frames", T_LONGLONG, offsetof(CaptureFilter, frames), READONLY, "frames read from rings"},
    {"pending", T_PYSSIZET, offsetof(CaptureFilter, pending), READONLY, "records kept, not yet taken"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CaptureFilterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._hotpath.CaptureFilter",
    .tp_basicsize = sizeof(CaptureFilter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Locate, dedup and budget of live capture over TPACKET_V3 blocks (agent/_capture.h).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)cf_init,
    .tp_dealloc = (destructor)cf_dealloc,
    .tp_methods = cf_methods,
    .tp_members = cf_members,
};
