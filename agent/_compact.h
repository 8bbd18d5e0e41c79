/* The compact flow table: flows in C only, until they need Python.
 *
 * decode -> **flows** -> (judges, sinks in aggregate). Included once by
 * agent/_hotpath.c, after its Packet and Table. A new flow whose first packet
 * is a bare SYN or UDP starts here: a few dozen bytes, no Python object. The
 * pipeline remembers (agent/outcomes.py) the outcome of each flow it judged at
 * its answer, keyed by what decides it: each end's class (a flow without
 * findings: what policies and TLS expectations can tell of it) or identity (a
 * flow with findings: an address the inventory knows is itself; any other is
 * which of the policies' CIDRs hold it), the port's class, the protocol,
 * whether both ends are one address, and the answer (established, refused,
 * unanswered). A compact flow whose
 * answer has a known outcome adds to that outcome's aggregate (count, times,
 * packets, bytes, the ports and sources an attempt group spreads over) and,
 * at its end, to the outcome's end count; the pipeline drains both after each
 * batch. A flow this table cannot finish alone goes to the Python table
 * ("promotion"), with everything counted so far, before the packet that needs
 * it is folded: TCP payload before the answer, a SYN-ACK (an established TCP
 * connection is classified), or an answer whose outcome is not known.
 *
 *   Compact()                                 the table, one per FlowTable (`FlowTable.compact`)
 *   configure(addresses, v4, v6, ports)       identities; forgets every outcome
 *   remember(src, dst, port, proto, state, first_seen, outcome, end_as, spread, plain_ok, tls_ok, by_class)
 *                                             -> bool
 *   live(outcome) -> compact flows answered under it and not ended (a forgotten one may be reused at 0)
 *   oldest(n) -> [first_seen]                 of the n oldest flows (FlowTable._evict merges both tables)
 *   forget_outcome(outcome)                   no new flow gets it (its event group ended): its memo entries lapse
 *   drain() -> [(outcome, count, first, last, packets, bytes, established, ends, ports, sources, tls)]
 *   collect_sources(outcome, bool)            whether an attempt group still counts its sources
 *   expire(table, now), sweep(table, now), flush(table)   deadlines, idle ends, the end of a run
 */

static PyTypeObject CompactType;

enum { ST_ESTABLISHED = 1, ST_REFUSED = 2, ST_UNANSWERED = 3, ST_START = 4 };
enum { CF_ESTABLISHED = 1, CF_CLOSED = 2, CF_FIN_FWD = 4, CF_FIN_REV = 8, CF_ANSWERED = 16, CF_CLASSIFIED = 32,
       CF_SERVER_ISN = 64, CF_HELLO = 128, CF_STARTED = 256 };
/* model.TLS_VERSIONS, the names decode/tls.py gives (version_name) */
static const char *TLS_NAMES[] = {"ssl2", "ssl3", "1.0", "1.1", "1.2", "1.3-draft", "1.3"};
#define N_TLS (sizeof TLS_NAMES / sizeof *TLS_NAMES)
#define MAX_MEMO (1u << 20)    /* outcomes remembered by key (~24 MiB of table at most) */
#define CLASSIFY_BYTES 16384  /* flows/table.py: the first bytes of each direction kept to classify */
#define MAX_RECORD 16384      /* decode/tls.py */
#define PORT_OTHER 65536u       /* the class of every port no policy names */
#define EXTERNAL_IDENT 0u       /* an address no CIDR and no inventory entry tells apart */

typedef struct {
    uint32_t src, dst, port;
    uint8_t proto, state, same, by_class;  /* by_class: src and dst are class idents, else identities */
} MemoKey;

typedef struct {
    uint8_t key[37], klen, alen, proto;
    uint16_t flags;
    uint32_t serial;  /* 0: a free slot */
    int32_t outcome, end_as;  /* once answered: its answer's outcome, and the outcome its end is counted under */
    uint32_t src, dst, src_class, dst_class, port;
    uint8_t same;
    double first_seen, last_seen;
    uint64_t packets_src, bytes_src, packets_dst, bytes_dst;
    uint32_t client_isn, server_isn;
    uint8_t *hello;       /* CF_HELLO: the client's first segment (a whole ClientHello), until the server's answer */
    uint32_t hello_len;
} CFlow;

typedef struct {
    uint64_t count, packets, bytes, ends;
    double first, last;
    int established, spread, collect;
    int plain_ok;         /* no judge finds anything in a plaintext (non-TLS) first exchange of this key */
    int tls_ok;           /* ... nor in a TLS one, whatever its version */
    uint64_t tls[N_TLS];  /* TLS connections classified here, by version */
    uint8_t *ports;       /* attempt outcomes: a bit per destination port, made at the first hit */
    uint8_t *sources;     /* attempt outcomes: 16 bytes per source address since the last drain */
    uint8_t *alens;
    Py_ssize_t n_sources, sources_cap;
    int lost;             /* a source was not kept */
    uint32_t gen;         /* bumped when forgotten (its event group ended): older memo entries mean nothing */
    int32_t end_as;       /* the outcome whose end count a flow of this one adds to (same verdict and kinds) */
    int64_t live;         /* compact flows answered under it and not ended: it may be reused at 0 */
} Aggregate;

typedef struct { uint8_t addr[16]; uint8_t alen, used; uint32_t ident, cls[2]; double valid_from; } AddrSlot;
typedef struct { double when; uint32_t index, serial; } Due;

typedef struct Compact {
    PyObject_HEAD
    /* identities */
    AddrSlot *addrs; size_t addr_cap;
    uint32_t *v4_lo, *v4_ident; Py_ssize_t n_v4;
    uint8_t *v6_lo; uint32_t *v6_ident; Py_ssize_t n_v6;
    uint8_t port_named[65536];
    int configured;
    /* outcomes */
    MemoKey *memo_keys; int32_t *memo_values; uint32_t *memo_gens;  /* a value < 0: an empty slot */
    size_t memo_cap, memo_used;
    Aggregate *aggs; Py_ssize_t n_aggs;
    /* flows: a slab, an index of both keys (slot = index * 2 + reverse, -1 empty, -2 deleted) */
    CFlow *flows; uint32_t n_flows, flow_cap, *free_list, n_free, serial;
    int64_t *index; size_t index_cap, index_used;
    Due *dues; size_t due_head, due_len, due_cap;     /* answer deadlines, in time order */
    Due *ages; size_t age_head, age_len, age_cap;     /* creation order, for eviction */
    double answer_timeout, tcp_timeout, udp_timeout, closed_linger;
    Py_ssize_t max_flows;
    int start_judges;  /* judges speak at a flow's first packet: a new flow needs its START outcome */
    unsigned long long ended, evicted;  /* ended: flows that lived here to their end */
    double last_shed;
} Compact;

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33, h *= 0xff51afd7ed558ccdULL, h ^= h >> 33, h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t bytes_hash(const uint8_t *b, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ULL;
    return mix64(h);
}

/* ------------------------------------------------------------ identities */

static AddrSlot *addr_find(Compact *c, const uint8_t *a, unsigned alen) {
    if (c->addr_cap == 0) return NULL;
    size_t mask = c->addr_cap - 1, i = bytes_hash(a, alen) & mask;
    for (;; i = (i + 1) & mask) {
        AddrSlot *s = &c->addrs[i];
        if (!s->used) return NULL;
        if (s->alen == alen && memcmp(s->addr, a, alen) == 0) return s;
    }
}

/* The identity and class of an address as the `dst` (1) or source (0) of a flow that started at `at`; 0 when
 * not known here (Python decides). An address the inventory knows has its own identity and a class (its
 * pod's: for policies, and as a destination for TLS expectations too); any other is its CIDR class. */
static int ident_of(Compact *c, const uint8_t *a, unsigned alen, double at, int dst, uint32_t *ident,
                    uint32_t *cls) {
    AddrSlot *s = addr_find(c, a, alen);
    if (s != NULL) {
        *ident = s->ident, *cls = s->cls[dst];
        return at >= s->valid_from;
    }
    Py_ssize_t lo = 0, hi;
    if (alen == 4) {
        uint32_t v = u32be(a);
        hi = c->n_v4;
        while (lo < hi) {  /* the last interval starting at or before v */
            Py_ssize_t mid = (lo + hi) / 2;
            if (c->v4_lo[mid] <= v) lo = mid + 1; else hi = mid;
        }
        *ident = *cls = lo ? c->v4_ident[lo - 1] : EXTERNAL_IDENT;
        return 1;
    }
    hi = c->n_v6;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (memcmp(c->v6_lo + 16 * mid, a, 16) <= 0) lo = mid + 1; else hi = mid;
    }
    *ident = *cls = lo ? c->v6_ident[lo - 1] : EXTERNAL_IDENT;
    return 1;
}

/* ---------------------------------------------------------------- outcomes */

static inline uint64_t memo_hash(const MemoKey *k) {
    return mix64(((uint64_t)k->src << 32 | k->dst) ^ mix64((uint64_t)k->port << 32 | (uint64_t)k->proto << 24 |
                                                          k->state << 16 | k->same << 8 | k->by_class));
}

static inline int memo_eq(const MemoKey *a, const MemoKey *b) {
    return a->src == b->src && a->dst == b->dst && a->port == b->port && a->proto == b->proto &&
           a->state == b->state && a->same == b->same && a->by_class == b->by_class;
}

static int32_t memo_get(Compact *c, const MemoKey *k) {
    if (c->memo_cap == 0) return -1;
    size_t mask = c->memo_cap - 1, i = memo_hash(k) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t o = c->memo_values[i];
        if (o < 0) return -1;
        if (memo_eq(&c->memo_keys[i], k)) return c->aggs[o].gen == c->memo_gens[i] ? o : -1;
    }
}

static void memo_forget(Compact *c) {
    if (c->memo_cap) memset(c->memo_values, 0xFF, c->memo_cap * sizeof *c->memo_values);
    c->memo_used = 0;
}

static int memo_put(Compact *c, MemoKey k, int32_t value) {
    if (c->memo_used >= MAX_MEMO) memo_forget(c);  /* keys seen only once add up: start over, bounded */
    if ((c->memo_used + 1) * 2 > c->memo_cap) {  /* grow (entries are never deleted, only all forgotten) */
        size_t cap = c->memo_cap ? c->memo_cap * 2 : 1024;
        MemoKey *keys = PyMem_Malloc(cap * sizeof *keys);
        int32_t *values = PyMem_Malloc(cap * sizeof *values);
        uint32_t *gens = PyMem_Malloc(cap * sizeof *gens);
        if (keys == NULL || values == NULL || gens == NULL) {
            PyMem_Free(keys), PyMem_Free(values), PyMem_Free(gens);
            PyErr_NoMemory();
            return -1;
        }
        memset(values, 0xFF, cap * sizeof *values);
        for (size_t i = 0; i < c->memo_cap; i++) {
            if (c->memo_values[i] < 0) continue;
            size_t j = memo_hash(&c->memo_keys[i]) & (cap - 1);
            while (values[j] >= 0) j = (j + 1) & (cap - 1);
            keys[j] = c->memo_keys[i], values[j] = c->memo_values[i], gens[j] = c->memo_gens[i];
        }
        PyMem_Free(c->memo_keys), PyMem_Free(c->memo_values), PyMem_Free(c->memo_gens);
        c->memo_keys = keys, c->memo_values = values, c->memo_gens = gens, c->memo_cap = cap;
    }
    size_t mask = c->memo_cap - 1, i = memo_hash(&k) & mask;
    while (c->memo_values[i] >= 0 && !memo_eq(&c->memo_keys[i], &k)) i = (i + 1) & mask;
    if (c->memo_values[i] < 0) c->memo_used++;
    c->memo_keys[i] = k, c->memo_values[i] = value, c->memo_gens[i] = c->aggs[value].gen;
    return 0;
}

static void aggs_free(Compact *c) {
    for (Py_ssize_t i = 0; i < c->n_aggs; i++) {
        PyMem_Free(c->aggs[i].ports), PyMem_Free(c->aggs[i].sources), PyMem_Free(c->aggs[i].alens);
    }
    PyMem_Free(c->aggs);
    c->aggs = NULL, c->n_aggs = 0;
}

/* An attempt's source, kept for the drain while the pipeline still counts the group's sources. */
static void add_source(Aggregate *g, const uint8_t *a, unsigned alen) {
    if (!g->collect) return;
    if (g->n_sources == g->sources_cap) {
        Py_ssize_t cap = g->sources_cap ? g->sources_cap * 2 : 64;
        uint8_t *sources = PyMem_Realloc(g->sources, 16 * cap), *alens = sources ? PyMem_Realloc(g->alens, cap) : NULL;
        if (sources) g->sources = sources;
        if (alens == NULL) {  /* out of memory: the group's source count stops here, said incomplete */
            g->collect = 0, g->lost = 1;
            return;
        }
        g->alens = alens, g->sources_cap = cap;
    }
    memcpy(g->sources + 16 * g->n_sources, a, alen);
    g->alens[g->n_sources++] = (uint8_t)alen;
}

/* A point of the flow's life adds to its outcome's aggregate (EventSink._Group.add and _Spread.add in bulk). */
static void add_to(Compact *c, CFlow *f, int32_t outcome) {
    Aggregate *g = &c->aggs[outcome];
    if (g->count == 0 || f->first_seen < g->first) g->first = f->first_seen;
    if (g->count == 0 || f->last_seen > g->last) g->last = f->last_seen;
    g->count++;
    g->packets += f->packets_src + f->packets_dst;
    g->bytes += f->bytes_src + f->bytes_dst;
    g->established |= !!(f->flags & CF_ESTABLISHED);
    if (g->spread) {
        unsigned port = u16(f->key + 2 * f->alen + 2);
        if (g->ports == NULL) g->ports = PyMem_Calloc(8192, 1);
        if (g->ports != NULL) g->ports[port >> 3] |= (uint8_t)(1u << (port & 7));
        add_source(g, f->key, f->alen);
    }
}

/* Its answer: the outcome its end, and its first bytes, are counted under. */
static void apply_answer(Compact *c, CFlow *f, int32_t outcome) {
    Aggregate *g = &c->aggs[outcome];
    add_to(c, f, outcome);
    f->outcome = outcome, f->end_as = g->end_as;
    g->live++;
    f->flags |= CF_ANSWERED;
}

static MemoKey flow_memo_key(const CFlow *f, uint8_t state, int by_class) {
    MemoKey k = {by_class ? f->src_class : f->src, by_class ? f->dst_class : f->dst, f->port, f->proto, state,
                 f->same, (uint8_t)by_class};
    return k;
}

/* The outcome of a flow's answer: a class's (flows without findings), else its ends' own; -1 if none. */
static int32_t flow_outcome(Compact *c, const CFlow *f, uint8_t state) {
    MemoKey k = flow_memo_key(f, state, 1);
    int32_t o = memo_get(c, &k);
    if (o >= 0) return o;
    k = flow_memo_key(f, state, 0);
    return memo_get(c, &k);
}

/* Does `b` (n bytes) start with the lower-case `word`, its ASCII letters in any case? */
static int starts_nocase(const uint8_t *b, Py_ssize_t n, const char *word) {
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    if (n < len) return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        uint8_t w = (uint8_t)word[i];
        if (w >= 'a' && w <= 'z' ? (b[i] | 0x20) != w : b[i] != w) return 0;
    }
    return 1;
}

/* decode/http.py's BASIC_FIELD on the field line at `b` (inside a whole head, so it ends in LF):
 * Authorization or Proxy-Authorization whose auth-scheme is Basic, any case. */
static int basic_field(const uint8_t *b, Py_ssize_t n) {
    Py_ssize_t i = starts_nocase(b, n, "authorization:") ? 14 : starts_nocase(b, n, "proxy-authorization:") ? 20 : 0;
    if (i == 0) return 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t')) i++;
    return starts_nocase(b + i, n - i, "basic") && i + 5 < n &&
           (b[i + 5] == ' ' || b[i + 5] == '\t' || b[i + 5] == '\r' || b[i + 5] == '\n');
}

/* The client's first segment is an HTTP/1 request decode/app.py decides from it alone, without credentials:
 * a method (RFC 9110, but CONNECT, which tunnels) and an origin-form or `*` target (no other recogniser
 * claims those: "GET LOGIN" is IMAP there), its whole head (up to the empty line, within the bytes Python
 * keeps: decode/http.py waits for it), and no Authorization or Proxy-Authorization field with the Basic
 * scheme (a password in the clear: the judges see such a flow in Python). 0: Python classifies it. */
static int http_request(const uint8_t *b, Py_ssize_t n) {
    static const char *methods[] = {"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "TRACE ", "PATCH ", NULL};
    if (n > CLASSIFY_BYTES) n = CLASSIFY_BYTES;
    Py_ssize_t at = 0;
    for (const char **m = methods; *m && !at; m++) {
        Py_ssize_t len = (Py_ssize_t)strlen(*m);
        if (n > len && memcmp(b, *m, len) == 0) at = len;
    }
    if (!at || (b[at] != '/' && b[at] != '*')) return 0;
    for (Py_ssize_t i = at; i < n; i++) {
        if (b[i] != '\n') continue;
        const uint8_t *line = b + i + 1;  /* the next line: empty ends the head */
        Py_ssize_t rest = n - i - 1;
        if ((rest >= 1 && line[0] == '\n') || (rest >= 2 && line[0] == '\r' && line[1] == '\n')) return 1;
        if (basic_field(line, rest)) return 0;
    }
    return 0;
}

/* decode/tls.py's parse_client_hello when the hello is one whole record (its fast path): 1 for a ClientHello,
 * 0 for anything else (which Python then classifies). */
static int client_hello(const uint8_t *d, Py_ssize_t size) {
    if (size > CLASSIFY_BYTES) size = CLASSIFY_BYTES;
    if (size < 9 || d[0] != 0x16 || d[1] != 3 || d[5] != 1) return 0;
    Py_ssize_t record = u16(d + 3), end = 9 + ((Py_ssize_t)d[6] << 16 | u16(d + 7)), pos = 9;
    if (!(end <= 5 + record && 5 + record <= size && record <= MAX_RECORD)) return 0;
    if (pos + 35 > end) return 0;  /* _client_hello */
    pos += 35 + d[pos + 34];
    if (pos + 2 > end) return 0;
    Py_ssize_t n = u16(d + pos);
    pos += 2 + n;
    if ((n & 1) || pos >= end) return 0;
    pos += 1 + d[pos];
    if (pos > end) return 0;
    if (pos < end) {
        if (pos + 2 > end) return 0;
        Py_ssize_t ext_end = pos + 2 + u16(d + pos);
        if (ext_end > end) return 0;
        for (pos += 2; pos < ext_end; pos += 4 + u16(d + pos + 2))
            if (pos + 4 > ext_end || pos + 4 + u16(d + pos + 2) > ext_end) return 0;
    }
    return 1;
}

/* decode/tls.py's parse_server_hello on its fast path, as an index of TLS_NAMES; -1 for anything else. */
static int server_hello_version(const uint8_t *d, Py_ssize_t size) {
    if (size > CLASSIFY_BYTES) size = CLASSIFY_BYTES;
    if (size < 9 || d[0] != 0x16 || d[1] != 3 || d[5] != 2) return -1;
    Py_ssize_t record = u16(d + 3), end = 9 + ((Py_ssize_t)d[6] << 16 | u16(d + 7)), pos = 9;
    if (!(end <= 5 + record && end <= size && record <= MAX_RECORD)) return -1;
    if (pos + 35 > end) return -1;  /* _server_hello */
    unsigned version = u16(d + pos);
    if (version == 0x0304) version = 0x7F00;
    int draft = version >> 8 == 0x7F && (version & 0xFF) < 22;
    pos += draft ? 34 : 35 + d[pos + 34];
    if (pos + 3 - draft > end) return -1;
    pos += 3 - draft;
    if (pos < end) {
        if (pos + 2 > end) return -1;
        Py_ssize_t ext_end = pos + 2 + u16(d + pos);
        if (ext_end > end) return -1;
        for (pos += 2; pos < ext_end;) {
            if (pos + 4 > ext_end) return -1;
            unsigned type = u16(d + pos), n = u16(d + pos + 2);
            pos += 4;
            if (pos + n > ext_end) return -1;
            if (type == 0x002B && n == 2) version = u16(d + pos);
            pos += n;
        }
    }
    if (version >> 8 == 0x7F || (version >= 0x7E01 && version <= 0x7E02)) return 5;
    switch (version) {
    case 0x0002: return 0;
    case 0x0300: return 1;
    case 0x0301: return 2;
    case 0x0302: return 3;
    case 0x0303: return 4;
    case 0x0304: return 6;
    default: return -1;  /* "0x...": left to Python */
    }
}

/* ------------------------------------------------------------------ flows */

static void index_insert_raw(int64_t *index, size_t cap, const uint8_t *key, size_t klen, int64_t value) {
    size_t mask = cap - 1, i = bytes_hash(key, klen) & mask;
    while (index[i] >= 0) i = (i + 1) & mask;
    index[i] = value;
}

static inline const uint8_t *slot_key(Compact *c, int64_t slot, uint8_t *buf, size_t *klen);

static int index_grow(Compact *c) {
    size_t cap = c->index_cap ? c->index_cap : 1024;
    while ((size_t)c->n_flows * 2 * 3 > cap) cap *= 2;  /* at most a third full of live keys */
    int64_t *index = PyMem_Malloc(cap * sizeof *index);
    if (index == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < cap; i++) index[i] = -1;
    for (size_t i = 0; i < c->index_cap; i++) {
        if (c->index[i] < 0) continue;
        uint8_t buf[37];
        size_t klen;
        const uint8_t *key = slot_key(c, c->index[i], buf, &klen);
        index_insert_raw(index, cap, key, klen, c->index[i]);
    }
    PyMem_Free(c->index);
    c->index = index, c->index_cap = cap, c->index_used = (size_t)c->n_flows * 2;
    return 0;
}

/* The key a slot stands for: the initiator's (forward) or the responder's (reverse). */
static inline const uint8_t *slot_key(Compact *c, int64_t slot, uint8_t *buf, size_t *klen) {
    CFlow *f = &c->flows[slot >> 1];
    *klen = f->klen;
    if (!(slot & 1)) return f->key;
    unsigned a = f->alen;
    memcpy(buf, f->key + a, a), memcpy(buf + a, f->key, a);
    memcpy(buf + 2 * a, f->key + 2 * a + 2, 2), memcpy(buf + 2 * a + 2, f->key + 2 * a, 2);
    if (f->klen > 2 * a + 4) buf[2 * a + 4] = f->key[2 * a + 4];
    return buf;
}

/* The flow stored under `key` and whether the key is its initiator's; NULL when none. */
static CFlow *flow_find(Compact *c, const uint8_t *key, size_t klen, int *forward, size_t *where) {
    if (c->n_flows == 0 || c->index_cap == 0) return NULL;
    size_t mask = c->index_cap - 1, i = bytes_hash(key, klen) & mask;
    for (;; i = (i + 1) & mask) {
        int64_t slot = c->index[i];
        if (slot == -1) return NULL;
        if (slot < 0) continue;
        uint8_t buf[37];
        size_t n;
        const uint8_t *k = slot_key(c, slot, buf, &n);
        if (n == klen && memcmp(k, key, klen) == 0) {
            *forward = !(slot & 1);
            if (where) *where = i;
            return &c->flows[slot >> 1];
        }
    }
}

static void index_remove(Compact *c, const uint8_t *key, size_t klen) {
    int forward;
    size_t where;
    if (flow_find(c, key, klen, &forward, &where) != NULL) c->index[where] = -2;
}

static void flow_free(Compact *c, CFlow *f) {
    uint8_t buf[37];
    size_t klen;
    uint32_t i = (uint32_t)(f - c->flows);
    index_remove(c, f->key, f->klen);
    const uint8_t *rk = slot_key(c, (int64_t)i * 2 + 1, buf, &klen);
    if (klen != f->klen || memcmp(rk, f->key, klen) != 0) index_remove(c, rk, klen);
    PyMem_Free(f->hello);
    f->hello = NULL;
    f->serial = 0;
    c->free_list[c->n_free++] = i;
    c->n_flows--;
}

static int ring_push(Due **ring, size_t *head, size_t *len, size_t *cap, Due d) {
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        Due *n = PyMem_Malloc(ncap * sizeof *n);
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < *len; i++) n[i] = (*ring)[(*head + i) % *cap];
        PyMem_Free(*ring);
        *ring = n, *head = 0, *cap = ncap;
    }
    (*ring)[(*head + *len) % *cap] = d;
    (*len)++;
    return 0;
}

static inline Due ring_pop(Due *ring, size_t *head, size_t *len, size_t cap) {
    Due d = ring[*head];
    *head = (*head + 1) % cap, (*len)--;
    return d;
}

static inline CFlow *due_flow(Compact *c, Due d) {
    CFlow *f = &c->flows[d.index];
    return f->serial == d.serial ? f : NULL;
}

/* A new compact flow for this packet (its sender initiated it); NULL with no exception: it cannot be. */
static CFlow *flow_new(Compact *c, const Packet *p, const uint8_t *key, size_t klen, double ts,
                       const uint32_t ends[4], uint32_t port) {
    if (c->n_free == 0) {
        uint32_t cap = c->flow_cap ? c->flow_cap * 2 : 1024;
        CFlow *flows = PyMem_Realloc(c->flows, (size_t)cap * sizeof *flows);
        uint32_t *free_list = flows ? PyMem_Realloc(c->free_list, (size_t)cap * sizeof *free_list) : NULL;
        if (flows) c->flows = flows;
        if (free_list == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        c->free_list = free_list;
        for (uint32_t i = cap; i > c->flow_cap; i--) {
            c->flows[i - 1].serial = 0;
            c->free_list[c->n_free++] = i - 1;
        }
        c->flow_cap = cap;
    }
    if ((c->index_used + 2) * 3 > c->index_cap * 2 && index_grow(c) < 0) return NULL;
    uint32_t i = c->free_list[--c->n_free];
    CFlow *f = &c->flows[i];
    memset(f, 0, sizeof *f);
    memcpy(f->key, key, klen);
    f->klen = (uint8_t)klen, f->alen = (uint8_t)p->alen, f->proto = (uint8_t)p->proto;
    f->serial = ++c->serial ? c->serial : ++c->serial;
    f->outcome = -1;
    f->src = ends[0], f->src_class = ends[1], f->dst = ends[2], f->dst_class = ends[3], f->port = port;
    f->same = memcmp(p->src, p->dst, p->alen) == 0;
    f->first_seen = f->last_seen = ts;
    f->client_isn = p->seq;
    c->n_flows++;
    index_insert_raw(c->index, c->index_cap, f->key, klen, (int64_t)i * 2);
    uint8_t buf[37];
    size_t rlen;
    const uint8_t *rk = slot_key(c, (int64_t)i * 2 + 1, buf, &rlen);
    c->index_used += 2;
    if (rlen != klen || memcmp(rk, key, klen) != 0) index_insert_raw(c->index, c->index_cap, rk, rlen, (int64_t)i * 2 + 1);
    Due d = {ts + c->answer_timeout, i, f->serial};
    if (ring_push(&c->dues, &c->due_head, &c->due_len, &c->due_cap, d) < 0 ||
        ring_push(&c->ages, &c->age_head, &c->age_len, &c->age_cap, d) < 0) {
        flow_free(c, f);
        return NULL;
    }
    return f;
}

/* Free deleted index slots and dead age entries once they outnumber the live. */
static int compact_tidy(Compact *c) {
    if (c->index_used > (size_t)c->n_flows * 4 + 4096 && index_grow(c) < 0) return -1;
    if (c->age_len > (size_t)c->n_flows * 4 + 4096) {
        size_t kept = 0;
        for (size_t i = 0; i < c->age_len; i++) {
            Due d = c->ages[(c->age_head + i) % c->age_cap];
            if (due_flow(c, d)) c->ages[(c->age_head + kept++) % c->age_cap] = d;
        }
        c->age_len = kept;
    }
    return 0;
}

/* ------------------------------------------------------- the Python type */

static int parse_intervals(PyObject *list, int v6, Compact *c) {
    Py_ssize_t n = PyList_GET_SIZE(list);
    uint32_t *idents = PyMem_Malloc((n ? n : 1) * sizeof *idents);
    void *lo = PyMem_Malloc((n ? n : 1) * (v6 ? 16 : sizeof(uint32_t)));
    if (idents == NULL || lo == NULL) {
        PyMem_Free(idents), PyMem_Free(lo);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_buffer start;
        unsigned long ident;
        if (!PyArg_ParseTuple(item, "y*k", &start, &ident)) goto fail;
        int ok = start.len == (v6 ? 16 : 4);
        if (ok) {
            if (v6) memcpy((uint8_t *)lo + 16 * i, start.buf, 16);
            else ((uint32_t *)lo)[i] = u32be(start.buf);
            idents[i] = (uint32_t)ident;
        }
        PyBuffer_Release(&start);
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "an interval starts at a packed address of its family");
            goto fail;
        }
    }
    if (v6) {
        PyMem_Free(c->v6_lo), PyMem_Free(c->v6_ident);
        c->v6_lo = lo, c->v6_ident = idents, c->n_v6 = n;
    } else {
        PyMem_Free(c->v4_lo), PyMem_Free(c->v4_ident);
        c->v4_lo = lo, c->v4_ident = idents, c->n_v4 = n;
    }
    return 0;
fail:
    PyMem_Free(idents), PyMem_Free(lo);
    return -1;
}

static PyObject *compact_configure(Compact *c, PyObject *args) {
    PyObject *addresses, *v4, *v6;
    Py_buffer ports;
    if (!PyArg_ParseTuple(args, "O!O!O!y*", &PyDict_Type, &addresses, &PyList_Type, &v4, &PyList_Type, &v6,
                          &ports))
        return NULL;
    if (ports.len != 65536) {
        PyBuffer_Release(&ports);
        PyErr_SetString(PyExc_ValueError, "ports: a byte per port");
        return NULL;
    }
    memcpy(c->port_named, ports.buf, 65536);
    PyBuffer_Release(&ports);
    if (parse_intervals(v4, 0, c) < 0 || parse_intervals(v6, 1, c) < 0) return NULL;
    size_t cap = 1024;
    while ((size_t)PyDict_GET_SIZE(addresses) * 2 >= cap) cap *= 2;
    AddrSlot *slots = PyMem_Calloc(cap, sizeof *slots);
    if (slots == NULL) return PyErr_NoMemory();
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(addresses, &pos, &k, &v)) {
        unsigned long ident, src_cls, dst_cls;
        double valid_from;
        if (!PyBytes_Check(k) || (PyBytes_GET_SIZE(k) != 4 && PyBytes_GET_SIZE(k) != 16) ||
            !PyArg_ParseTuple(v, "kkkd", &ident, &src_cls, &dst_cls, &valid_from)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError,
                                "addresses: packed address -> (ident, class as source, class as destination, valid_from)");
            PyMem_Free(slots);
            return NULL;
        }
        unsigned alen = (unsigned)PyBytes_GET_SIZE(k);
        const uint8_t *a = (const uint8_t *)PyBytes_AS_STRING(k);
        size_t i = bytes_hash(a, alen) & (cap - 1);
        while (slots[i].used) i = (i + 1) & (cap - 1);
        memcpy(slots[i].addr, a, alen);
        slots[i].alen = (uint8_t)alen, slots[i].used = 1, slots[i].ident = (uint32_t)ident;
        slots[i].cls[0] = (uint32_t)src_cls, slots[i].cls[1] = (uint32_t)dst_cls;
        slots[i].valid_from = valid_from;
    }
    PyMem_Free(c->addrs);
    c->addrs = slots, c->addr_cap = cap, c->configured = 1;
    memo_forget(c);
    Py_RETURN_NONE;
}

static PyObject *compact_settings(Compact *c, PyObject *args) {
    if (!PyArg_ParseTuple(args, "ddddnp", &c->answer_timeout, &c->tcp_timeout, &c->udp_timeout, &c->closed_linger,
                          &c->max_flows, &c->start_judges))
        return NULL;
    Py_RETURN_NONE;
}

static int grow_aggs(Compact *c, Py_ssize_t n) {
    if (n <= c->n_aggs) return 0;
    Py_ssize_t cap = c->n_aggs ? c->n_aggs : 64;
    while (cap < n) cap *= 2;
    Aggregate *aggs = PyMem_Realloc(c->aggs, cap * sizeof *aggs);
    if (aggs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(aggs + c->n_aggs, 0, (cap - c->n_aggs) * sizeof *aggs);
    c->aggs = aggs, c->n_aggs = cap;
    return 0;
}

static PyObject *compact_remember(Compact *c, PyObject *args) {
    Py_buffer src, dst;
    unsigned port, proto, state;
    double first_seen;
    int outcome, end_as, spread, plain_ok, tls_ok, by_class;
    if (!PyArg_ParseTuple(args, "y*y*IIIdiipppp", &src, &dst, &port, &proto, &state, &first_seen, &outcome, &end_as,
                          &spread, &plain_ok, &tls_ok, &by_class))
        return NULL;
    PyObject *result = NULL;
    if (src.len != dst.len || (src.len != 4 && src.len != 16) || port > 65535 || state < ST_ESTABLISHED ||
        state > ST_START || outcome < 0 || end_as < 0) {
        PyErr_SetString(PyExc_ValueError, "remember(src, dst, port, proto, state, first_seen, outcome, spread)");
        goto done;
    }
    if (!c->configured) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    uint32_t s, s_cls, d, d_cls;
    if (!ident_of(c, src.buf, (unsigned)src.len, first_seen, 0, &s, &s_cls) ||
        !ident_of(c, dst.buf, (unsigned)src.len, first_seen, 1, &d, &d_cls)) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    MemoKey k = {by_class ? s_cls : s, by_class ? d_cls : d, c->port_named[port] ? port : PORT_OTHER,
                 (uint8_t)proto, (uint8_t)state, memcmp(src.buf, dst.buf, src.len) == 0, (uint8_t)by_class};
    if (grow_aggs(c, (Py_ssize_t)(outcome > end_as ? outcome : end_as) + 1) < 0) goto done;
    Aggregate *g = &c->aggs[outcome];
    g->spread = spread, g->collect = spread, g->plain_ok = plain_ok, g->tls_ok = tls_ok, g->end_as = end_as;
    if (memo_put(c, k, outcome) < 0) goto done;
    result = Py_NewRef(Py_True);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyObject *compact_oldest(Compact *c, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out != NULL && i < c->age_len && PyList_GET_SIZE(out) < n; i++) {
        CFlow *f = due_flow(c, c->ages[(c->age_head + i) % c->age_cap]);
        PyObject *when = f ? PyFloat_FromDouble(f->first_seen) : NULL;
        if (f != NULL && (when == NULL || PyList_Append(out, when) < 0)) Py_CLEAR(out);
        Py_XDECREF(when);
    }
    return out;
}

static PyObject *compact_forget_outcome(Compact *c, PyObject *arg) {
    Py_ssize_t outcome = PyLong_AsSsize_t(arg);
    if (outcome == -1 && PyErr_Occurred()) return NULL;
    if (outcome >= 0 && outcome < c->n_aggs) c->aggs[outcome].gen++;
    Py_RETURN_NONE;
}

static PyObject *compact_live(Compact *c, PyObject *arg) {
    Py_ssize_t outcome = PyLong_AsSsize_t(arg);
    if (outcome == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(outcome >= 0 && outcome < c->n_aggs ? c->aggs[outcome].live : 0);
}

static PyObject *compact_collect_sources(Compact *c, PyObject *args) {
    Py_ssize_t outcome;
    int collect;
    if (!PyArg_ParseTuple(args, "np", &outcome, &collect)) return NULL;
    if (outcome >= 0 && outcome < c->n_aggs) c->aggs[outcome].collect = collect && c->aggs[outcome].spread;
    Py_RETURN_NONE;
}

static PyObject *compact_drain(Compact *c, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < c->n_aggs; i++) {
        Aggregate *g = &c->aggs[i];
        uint64_t tls = 0;
        for (size_t v = 0; v < N_TLS; v++) tls += g->tls[v];
        if (!g->count && !g->ends && !tls) continue;
        PyObject *versions = PyDict_New();
        for (size_t v = 0; versions != NULL && v < N_TLS; v++) {
            PyObject *n = g->tls[v] ? PyLong_FromUnsignedLongLong(g->tls[v]) : NULL;
            if (g->tls[v] && (n == NULL || PyDict_SetItemString(versions, TLS_NAMES[v], n) < 0)) Py_CLEAR(versions);
            Py_XDECREF(n);
        }
        memset(g->tls, 0, sizeof g->tls);
        if (versions == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyObject *ports = Py_NewRef(Py_None), *sources = Py_NewRef(Py_None);
        if (g->count && g->spread) {
            Py_SETREF(ports, g->ports ? PyBytes_FromStringAndSize((const char *)g->ports, 8192) : Py_NewRef(Py_None));
            Py_SETREF(sources, PyList_New(g->n_sources + g->lost));  /* a None: a source was not kept */
            for (Py_ssize_t j = 0; sources != NULL && j < g->n_sources + g->lost; j++) {
                PyObject *a = j < g->n_sources ? PyBytes_FromStringAndSize((const char *)g->sources + 16 * j, g->alens[j])
                                               : Py_NewRef(Py_None);
                if (a == NULL) Py_CLEAR(sources);
                else PyList_SET_ITEM(sources, j, a);
            }
            if (g->ports) memset(g->ports, 0, 8192);
        }
        PyObject *item = ports && sources ? Py_BuildValue("nKddKKOKOON", i, (unsigned long long)g->count, g->first,
                                                          g->last, (unsigned long long)g->packets,
                                                          (unsigned long long)g->bytes,
                                                          g->established ? Py_True : Py_False,
                                                          (unsigned long long)g->ends, ports, sources, versions)
                                          : NULL;
        if (!(ports && sources)) Py_DECREF(versions);
        Py_XDECREF(ports), Py_XDECREF(sources);
        if (item == NULL || PyList_Append(out, item) < 0) Py_CLEAR(out);
        Py_XDECREF(item);
        g->count = g->packets = g->bytes = g->ends = 0;
        g->established = 0, g->n_sources = 0, g->lost = 0;
    }
    return out;
}

static Py_ssize_t compact_len(Compact *c) { return c->n_flows; }

static PyObject *compact_counts(Compact *c, void *closure) {
    return Py_BuildValue("KKd", c->ended, c->evicted, c->last_shed);
}

static void compact_dealloc(Compact *c) {
    for (uint32_t i = 0; i < c->flow_cap; i++) PyMem_Free(c->flows[i].serial ? c->flows[i].hello : NULL);
    PyMem_Free(c->addrs), PyMem_Free(c->v4_lo), PyMem_Free(c->v4_ident), PyMem_Free(c->v6_lo);
    PyMem_Free(c->v6_ident), PyMem_Free(c->memo_keys), PyMem_Free(c->memo_values), PyMem_Free(c->memo_gens);
    aggs_free(c);
    PyMem_Free(c->flows), PyMem_Free(c->free_list), PyMem_Free(c->index), PyMem_Free(c->dues), PyMem_Free(c->ages);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *compact_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Compact *c = (Compact *)type->tp_alloc(type, 0);  /* zeroed */
    if (c != NULL) c->last_shed = -Py_HUGE_VAL, c->max_flows = 100000, c->answer_timeout = 2.0;
    return (PyObject *)c;
}
