/* The per-packet path, compiled: pcap records -> decode -> flow-table update.
 *
 * capture -> **decode -> flows** for what needs no Python: most packets of a
 * flow only add to its counters. This module decodes each frame exactly as
 * agent/decode/packet.py does, looks its key up in the FlowTable's dict,
 * starts new flows (start_flow = FlowTable._start) and updates the Flow's
 * slots in place: counters, times, establishment, FIN/RST (close_flow =
 * FlowTable._close). It calls back into the table through its `hooks`
 * (flows.table.FoldHooks), in packet order: when a flow is stored, at the
 * responder's first packet, for the payload of a flow not yet classified, at
 * the SYN-ACK, to end a flow whose 5-tuple a new SYN reuses, and (only when the
 * table's `dns_queries` is on) for the initiator's first UDP/53 datagram. agent/flows/table.py keeps the same loop
 * in Python: it is the reference (tests/test_hotpath.py compares the two on
 * every bundled capture, fuzzed frames and random conversations) and what
 * runs when this module is not built.
 *
 *   setup(DecodeError, Skip)                once, from agent/decode/hotpath.py
 *   flow_types(Flow, Track, template, PROTOCOLS)
 *                                           once, from agent/flows/table.py
 *   decode(linktype, frame)                 = agent.decode.packet.decode_frame
 *   ingest(table, frames)                   fold a list of (ts, linktype, frame)
 *   scan_pcap(buf, pos, big_endian)         -> (end, count) of the complete records from pos
 *   ingest_pcap(table, buf, start, end, linktype, big_endian, nanos)
 *   records(buf, start, end, linktype, big_endian, nanos) -> list of frames
 *   CaptureFilter                           live capture's ring reader before the fold (_capture.h)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* ------------------------------------------------------------------ decode */

enum { DECODED = 0, DROP = 1, SKIP = 2 };
#define MAX_DEPTH 4
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define SCTP_ABORT 6

typedef struct {
    unsigned proto, flags, alen;
    uint32_t seq;
    const uint8_t *src, *dst, *ports, *frame;
    Py_ssize_t start, end, total;  /* the payload is frame[start:end] */
    const char *reason;  /* DROP/SKIP: the reason slug, or its prefix when number >= 0 */
    long long number;
} Packet;

#define FAIL(outcome, why) do { p->reason = (why); p->number = -1; return (outcome); } while (0)

static inline unsigned u16(const uint8_t *b) { return (unsigned)b[0] << 8 | b[1]; }
static inline uint32_t u32be(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int d_ipv4(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p);
static int d_ipv6(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p);

static int d_ethertype(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, unsigned etype, int depth, Packet *p) {
    if (etype == 0x0800) return d_ipv4(f, n, off, depth, p);
    if (etype == 0x86DD) return d_ipv6(f, n, off, depth, p);
    FAIL(SKIP, "non-ip");
}

static int d_ether(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p) {
    if (n < off + 14) FAIL(DROP, "ether-truncated");
    unsigned etype = u16(f + off + 12);
    off += 14;
    while (etype == 0x8100 || etype == 0x88A8 || etype == 0x9100) {  /* 802.1Q / QinQ tags */
        if (n < off + 4) FAIL(DROP, "vlan-truncated");
        etype = u16(f + off + 2);
        off += 4;
    }
    return d_ethertype(f, n, off, etype, depth, p);
}

static int d_inner(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, unsigned ptype, int depth, Packet *p) {
    if (ptype == 0x6558 || ptype == 0x88BE || ptype == 0x22EB) return d_ether(f, n, off, depth, p);
    return d_ethertype(f, n, off, ptype, depth, p);
}

static int d_geneve(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p) {
    if (n < off + 8) FAIL(DROP, "geneve-truncated");
    Py_ssize_t opt_len = (f[off] & 0x3F) * 4;
    return d_inner(f, n, off + 8 + opt_len, u16(f + off + 2), depth, p);
}

static int d_gre(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p) {
    if (n < off + 4) FAIL(DROP, "gre-truncated");
    unsigned flags = f[off], ptype = u16(f + off + 2);
    off += 4 + 4 * (!!(flags & 0x80) + !!(flags & 0x20) + !!(flags & 0x10));
    if (ptype == 0x88BE && (flags & 0x10)) {
        off += 8;
    } else if (ptype == 0x22EB) {
        if (n < off + 12) FAIL(DROP, "erspan-truncated");
        off += (f[off + 11] & 0x01) ? 20 : 12;
    }
    return d_inner(f, n, off, ptype, depth, p);
}

static int d_transport(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end, unsigned proto,
                       const uint8_t *src, const uint8_t *dst, unsigned alen, Py_ssize_t total, int depth,
                       Packet *p) {
    p->src = src, p->dst = dst, p->alen = alen, p->total = total, p->end = end, p->seq = 0, p->flags = 0;
    p->ports = f + off;
    if (proto == 6) {
        if (off + 20 > end) FAIL(DROP, "tcp-truncated");
        Py_ssize_t hlen = (f[off + 12] >> 4) * 4;
        if (hlen < 20) FAIL(DROP, "tcp-bad-offset");
        p->proto = 6, p->seq = u32be(f + off + 4), p->flags = f[off + 13];
        p->start = off + hlen < end ? off + hlen : end;
        return DECODED;
    }
    if (proto == 17) {
        if (off + 8 > end) FAIL(DROP, "udp-truncated");
        unsigned dport = u16(f + off + 2);
        if (depth < MAX_DEPTH) {
            /* The Python decoder indexes the frame (not the IP payload) here: an
             * IndexError there is "truncated", so the same bounds apply. */
            if (dport == 4789 || dport == 8472) {
                if (off + 8 >= n) FAIL(DROP, "truncated");
                if (f[off + 8] & 0x08) return d_ether(f, n, off + 16, depth + 1, p);
            }
            if (dport == 6081) return d_geneve(f, n, off + 8, depth + 1, p);
            if (dport == 4790) {
                if (off + 8 >= n) FAIL(DROP, "truncated");
                if (f[off + 8] & 0x04) {
                    if (off + 11 >= n) FAIL(DROP, "truncated");
                    unsigned next = f[off + 11];
                    if (next >= 1 && next <= 3)
                        return d_inner(f, n, off + 16, next == 1 ? 0x0800 : next == 2 ? 0x86DD : 0x6558,
                                       depth + 1, p);
                }
            }
        }
        p->proto = 17, p->start = off + 8;
        return DECODED;
    }
    if (proto == 132) {
        if (off + 12 > end) FAIL(DROP, "sctp-truncated");
        p->proto = 132, p->flags = off + 12 < end ? f[off + 12] : 0, p->start = off + 12;
        return DECODED;
    }
    if (depth < MAX_DEPTH) {
        if (proto == 4) return d_ipv4(f, n, off, depth + 1, p);
        if (proto == 41) return d_ipv6(f, n, off, depth + 1, p);
        if (proto == 47) return d_gre(f, n, off, depth + 1, p);
    }
    if (proto == 1 || proto == 58) FAIL(SKIP, "icmp");
    p->reason = "ip-proto-", p->number = proto;
    return SKIP;
}

static int d_ipv4(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p) {
    if (n < off + 20) FAIL(DROP, "ipv4-truncated");
    unsigned vihl = f[off];
    if (vihl >> 4 != 4) FAIL(DROP, "ipv4-bad-version");
    Py_ssize_t ihl = (vihl & 15) * 4;
    if (ihl < 20) FAIL(DROP, "ipv4-bad-ihl");
    Py_ssize_t total = u16(f + off + 2);
    if (total == 0) total = n - off;  /* captured before TCP segmentation offload filled it in */
    if (total < ihl) FAIL(DROP, "ipv4-bad-length");
    Py_ssize_t end = off + total < n ? off + total : n;
    if (u16(f + off + 6) & 0x1FFF) FAIL(SKIP, "ip-fragment");
    return d_transport(f, n, off + ihl, end, f[off + 9], f + off + 12, f + off + 16, 4, total, depth, p);
}

static int d_ipv6(const uint8_t *f, Py_ssize_t n, Py_ssize_t off, int depth, Packet *p) {
    if (n < off + 40) FAIL(DROP, "ipv6-truncated");
    if (f[off] >> 4 != 6) FAIL(DROP, "ipv6-bad-version");
    unsigned plen = u16(f + off + 4), next = f[off + 6];
    const uint8_t *src = f + off + 8, *dst = f + off + 24;
    Py_ssize_t total = plen ? (Py_ssize_t)plen + 40 : n - off;
    Py_ssize_t end = off + total < n ? off + total : n;
    off += 40;
    while (next == 0 || next == 43 || next == 60 || next == 51 || next == 44) {
        if (off + 8 > end) FAIL(DROP, "ipv6-ext-truncated");
        Py_ssize_t size;
        if (next == 44) {
            if (u16(f + off + 2) & 0xFFF8) FAIL(SKIP, "ip-fragment");
            size = 8;
        } else if (next == 51) {
            size = (f[off + 1] + 2) * 4;
        } else {
            size = (f[off + 1] + 1) * 8;
        }
        next = f[off];
        off += size;
    }
    if (next == 59) FAIL(SKIP, "ipv6-no-next-header");
    return d_transport(f, n, off, end, next, src, dst, 16, total, depth, p);
}

static int decode(long long linktype, const uint8_t *f, Py_ssize_t n, Packet *p) {
    p->frame = f;
    switch (linktype) {
    case 1:
        return d_ether(f, n, 0, 0, p);
    case 101: case 12: case 14:
        if (n < 1) FAIL(DROP, "truncated");
        if (f[0] >> 4 == 4) return d_ipv4(f, n, 0, 0, p);
        if (f[0] >> 4 == 6) return d_ipv6(f, n, 0, 0, p);
        FAIL(DROP, "raw-bad-version");
    case 228:
        return d_ipv4(f, n, 0, 0, p);
    case 229:
        return d_ipv6(f, n, 0, 0, p);
    case 113:
        if (n < 16) FAIL(DROP, "sll-truncated");
        return d_ethertype(f, n, 16, u16(f + 14), 0, p);
    case 276:
        if (n < 20) FAIL(DROP, "sll2-truncated");
        return d_ethertype(f, n, 20, u16(f), 0, p);
    case 0: case 108: {
        if (n < 4) FAIL(DROP, "null-truncated");
        unsigned family = f[0] | f[3];
        if (family == 2) return d_ipv4(f, n, 4, 0, p);
        if (family == 10 || family == 24 || family == 28 || family == 30) return d_ipv6(f, n, 4, 0, p);
        FAIL(SKIP, "non-ip");
    }
    default:
        p->reason = "unsupported-linktype-", p->number = linktype;
        return DROP;
    }
}

/* The flow key: source, destination, ports, then the protocol byte for all but TCP. */
static size_t raw_key(const Packet *p, uint8_t *key) {
    unsigned a = p->alen, len = 2 * a + 4;
    memcpy(key, p->src, a);
    memcpy(key + a, p->dst, a);
    memcpy(key + 2 * a, p->ports, 4);
    if (p->proto != 6) key[len++] = (uint8_t)p->proto;
    return len;
}

static PyObject *packet_key(const Packet *p) {
    uint8_t key[37];
    return PyBytes_FromStringAndSize((const char *)key, raw_key(p, key));
}

static PyObject *packet_reason(const Packet *p) {
    if (p->number < 0) return PyUnicode_FromString(p->reason);
    return PyUnicode_FromFormat("%s%lld", p->reason, p->number);
}

/* ---------------------------------------------------------- module state */

static PyTypeObject *flow_type, *track_type;
static PyObject *flow_template, *proto_names;  /* proto_names: model.PROTOCOLS */
static Py_ssize_t flow_slots[64];  /* every slot of Flow, for cloning the template */
static Py_ssize_t n_flow_slots;
static PyObject *decode_error, *skip_error;
static Py_ssize_t off_last_seen, off_packets_src, off_bytes_src, off_packets_dst, off_bytes_dst,
    off_established, off_closed, off_result, off_server, off_server_isn, off_fins, off_protocol, off_src_ip, off_src_port,
    off_dst_ip, off_dst_port, off_first_seen, off_mid_stream, off_started;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static void slot_set(PyObject *obj, Py_ssize_t off, PyObject *value) {  /* steals value */
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

static int slot_add(PyObject *obj, Py_ssize_t off, Py_ssize_t delta) {
    PyObject *old = SLOT(obj, off), *sum;
    if (old == NULL) {
        PyErr_SetString(PyExc_AttributeError, "flow counter not set");
        return -1;
    }
    long long v = PyLong_CheckExact(old) ? PyLong_AsLongLong(old) : -1;
    if (v >= 0 && v < (1LL << 62)) {
        sum = PyLong_FromLongLong(v + delta);
    } else {
        PyErr_Clear();
        PyObject *d = PyLong_FromSsize_t(delta);
        sum = d ? PyNumber_Add(old, d) : NULL;
        Py_XDECREF(d);
    }
    if (sum == NULL) return -1;
    slot_set(obj, off, sum);
    return 0;
}

static int member_offset(PyTypeObject *type, const char *name, Py_ssize_t *out) {
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);  /* the descriptor itself */
    int ok = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX;
    if (ok) *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_XDECREF(d);
    if (!ok) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ attribute", type->tp_name, name);
        return -1;
    }
    return 0;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *derr, *skip;
    if (!PyArg_ParseTuple(args, "OO", &derr, &skip)) return NULL;
    Py_XSETREF(decode_error, Py_NewRef(derr));
    Py_XSETREF(skip_error, Py_NewRef(skip));
    Py_RETURN_NONE;
}

static PyObject *flow_types(PyObject *self, PyObject *args) {
    PyObject *flow, *track, *template, *protocols;
    if (!PyArg_ParseTuple(args, "O!O!OO!", &PyType_Type, &flow, &PyType_Type, &track, &template, &PyDict_Type,
                          &protocols))
        return NULL;
    PyTypeObject *ft = (PyTypeObject *)flow, *tt = (PyTypeObject *)track;
    if (!Py_IS_TYPE(template, ft)) {
        PyErr_SetString(PyExc_TypeError, "the template is a Flow");
        return NULL;
    }
    if (member_offset(ft, "last_seen", &off_last_seen) || member_offset(ft, "packets_src", &off_packets_src) ||
        member_offset(ft, "bytes_src", &off_bytes_src) || member_offset(ft, "packets_dst", &off_packets_dst) ||
        member_offset(ft, "bytes_dst", &off_bytes_dst) || member_offset(ft, "established", &off_established) ||
        member_offset(ft, "closed", &off_closed) || member_offset(ft, "protocol", &off_protocol) ||
        member_offset(ft, "src_ip", &off_src_ip) || member_offset(ft, "src_port", &off_src_port) ||
        member_offset(ft, "dst_ip", &off_dst_ip) || member_offset(ft, "dst_port", &off_dst_port) ||
        member_offset(ft, "first_seen", &off_first_seen) || member_offset(ft, "mid_stream", &off_mid_stream) ||
        member_offset(ft, "started", &off_started) ||
        member_offset(tt, "result", &off_result) || member_offset(tt, "server", &off_server) ||
        member_offset(tt, "server_isn", &off_server_isn) || member_offset(tt, "fins", &off_fins))
        return NULL;
    PyObject *names = PyObject_GetAttrString(flow, "__slots__");
    PyObject *seq = names ? PySequence_Fast(names, "Flow.__slots__ is a sequence") : NULL;
    Py_XDECREF(names);
    if (seq == NULL) return NULL;
    n_flow_slots = PySequence_Fast_GET_SIZE(seq);
    int failed = n_flow_slots > (Py_ssize_t)(sizeof flow_slots / sizeof *flow_slots);
    if (failed) PyErr_SetString(PyExc_TypeError, "Flow has too many slots");
    for (Py_ssize_t i = 0; !failed && i < n_flow_slots; i++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        failed = name == NULL || member_offset(ft, name, &flow_slots[i]) < 0;
    }
    Py_DECREF(seq);
    if (failed) {
        n_flow_slots = 0;
        return NULL;
    }
    Py_XSETREF(flow_type, (PyTypeObject *)Py_NewRef(flow));
    Py_XSETREF(track_type, (PyTypeObject *)Py_NewRef(track));
    Py_XSETREF(flow_template, Py_NewRef(template));
    Py_XSETREF(proto_names, Py_NewRef(protocols));
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- the fold */

#include "_compact.h"

typedef struct {
    PyObject *table;  /* borrowed */
    PyObject *flows, *dropped, *skipped, *ip_cache;  /* the table's dicts */
    PyObject *started, *answered, *payload, *server, *end, *ip, *evict, *adopt;  /* its FoldHooks */
    PyObject *datagram;  /* ... and FoldHooks.datagram when the table's dns_queries is on, else NULL */
    Compact *compact;  /* its compact table (agent/_compact.h), or NULL */
} Table;

static void table_release(Table *t) {
    Py_CLEAR(t->flows);
    Py_CLEAR(t->dropped);
    Py_CLEAR(t->skipped);
    Py_CLEAR(t->ip_cache);
    Py_CLEAR(t->started);
    Py_CLEAR(t->answered);
    Py_CLEAR(t->payload);
    Py_CLEAR(t->server);
    Py_CLEAR(t->end);
    Py_CLEAR(t->ip);
    Py_CLEAR(t->evict);
    Py_CLEAR(t->adopt);
    Py_CLEAR(t->datagram);
    Py_CLEAR(t->compact);
}

static int table_bind(Table *t, PyObject *table) {
    memset(t, 0, sizeof *t);
    t->table = table;
    if (flow_type == NULL || decode_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._hotpath.setup() and flow_types() were not called");
        return -1;
    }
    PyObject *hooks = NULL;
    if (!(t->flows = PyObject_GetAttrString(table, "flows")) || !PyDict_CheckExact(t->flows) ||
        !(t->dropped = PyObject_GetAttrString(table, "dropped")) || !PyDict_CheckExact(t->dropped) ||
        !(t->skipped = PyObject_GetAttrString(table, "skipped")) || !PyDict_CheckExact(t->skipped) ||
        !(t->ip_cache = PyObject_GetAttrString(table, "_ip_cache")) || !PyDict_CheckExact(t->ip_cache) ||
        !(hooks = PyObject_GetAttrString(table, "hooks")) ||
        !(t->started = PyObject_GetAttrString(hooks, "started")) ||
        !(t->answered = PyObject_GetAttrString(hooks, "answered")) ||
        !(t->payload = PyObject_GetAttrString(hooks, "payload")) ||
        !(t->server = PyObject_GetAttrString(hooks, "server_start")) ||
        !(t->end = PyObject_GetAttrString(hooks, "end")) ||
        !(t->ip = PyObject_GetAttrString(hooks, "ip_text")) ||
        !(t->evict = PyObject_GetAttrString(hooks, "evict")) ||
        !(t->adopt = PyObject_GetAttrString(hooks, "adopt"))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a FlowTable's flows, dropped, skipped and _ip_cache are dicts");
        Py_XDECREF(hooks);
        table_release(t);
        return -1;
    }
    PyObject *dns = PyObject_GetAttrString(table, "dns_queries");
    int on = dns ? PyObject_IsTrue(dns) : -1;
    Py_XDECREF(dns);
    if (on < 0 || (on && !(t->datagram = PyObject_GetAttrString(hooks, "datagram")))) {
        Py_DECREF(hooks);
        table_release(t);
        return -1;
    }
    Py_DECREF(hooks);
    PyObject *compact = PyObject_GetAttrString(table, "compact");
    if (compact == NULL) {
        table_release(t);
        return -1;
    }
    if (Py_IS_TYPE(compact, &CompactType)) t->compact = (Compact *)compact;
    else Py_DECREF(compact);
    return 0;
}

static int count_reason(PyObject *counts, const Packet *p) {
    PyObject *reason = packet_reason(p);
    if (reason == NULL) return -1;
    PyObject *old = PyDict_GetItemWithError(counts, reason);
    long long n = old ? PyLong_AsLongLong(old) : 0;
    PyObject *value = (n == -1 && PyErr_Occurred()) ? NULL : PyLong_FromLongLong(n + 1);
    int rc = value ? PyDict_SetItem(counts, reason, value) : -1;
    Py_XDECREF(value);
    Py_DECREF(reason);
    return rc;
}

static int call_void(PyObject *method, PyObject *args) {  /* steals args */
    if (args == NULL) return -1;
    PyObject *r = PyObject_Call(method, args, NULL);
    Py_DECREF(args);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* FlowTable._close: RST closes; FIN closes once each direction sent one. */
static int close_flow(PyObject *flow, PyObject *track, unsigned flags, int forward) {
    PyObject *closed = Py_True;
    if (!(flags & TCP_RST)) {
        long fins = SLOT(track, off_fins) ? PyLong_AsLong(SLOT(track, off_fins)) : -1;
        if (fins == -1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "Track.fins not set");
            return -1;
        }
        fins |= forward ? 1 : 2;
        PyObject *value = PyLong_FromLong(fins);
        if (value == NULL) return -1;
        slot_set(track, off_fins, value);
        closed = fins == 3 ? Py_True : Py_False;
    }
    slot_set(flow, off_closed, Py_NewRef(closed));
    return 0;
}

/* (flow, forward, track, other key), with the types the slot offsets belong to. */
static int entry_check(PyObject *entry) {
    if (PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 4) {
        PyObject *flow = PyTuple_GET_ITEM(entry, 0), *track = PyTuple_GET_ITEM(entry, 2);
        if (Py_IS_TYPE(flow, flow_type) && (track == Py_None || Py_IS_TYPE(track, track_type))) return 0;
    }
    PyErr_SetString(PyExc_TypeError, "a flow table entry is (Flow, bool, Track | None, bytes)");
    return -1;
}

/* A Flow with every field as the template has it (the dataclass defaults); the caller sets the rest. */
static PyObject *clone_template(void) {
    PyObject *flow = flow_type->tp_alloc(flow_type, 0);
    if (flow == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n_flow_slots; i++)
        SLOT(flow, flow_slots[i]) = Py_XNewRef(SLOT(flow_template, flow_slots[i]));
    return flow;
}

static inline int port_rank(unsigned port) { return port < 1024 ? 0 : port < 32768 ? 1 : 2; }

static PyObject *ip_text(Table *t, const uint8_t *raw, unsigned alen) {  /* new reference */
    PyObject *key = PyBytes_FromStringAndSize((const char *)raw, alen), *text;
    if (key == NULL) return NULL;
    text = PyDict_GetItemWithError(t->ip_cache, key);
    if (text != NULL) Py_INCREF(text);
    else if (!PyErr_Occurred()) text = PyObject_CallOneArg(t->ip, key);
    Py_DECREF(key);
    return text;
}

static PyObject *proto_name(unsigned proto) {  /* model.PROTOCOLS, else the number (new reference) */
    PyObject *number = PyLong_FromUnsignedLong(proto), *name = NULL;
    if (number == NULL) return NULL;
    name = PyDict_GetItemWithError(proto_names, number);
    name = name ? Py_NewRef(name) : PyErr_Occurred() ? NULL : PyObject_Str(number);
    Py_DECREF(number);
    return name;
}

/* FlowTable._start: a new flow, stored under both keys; returns the entry for this packet (new ref). */
static PyObject *start_flow(Table *t, PyObject *ts, const Packet *p, PyObject *key) {
    unsigned a = p->alen, sport = u16(p->ports), dport = u16(p->ports + 2);
    int forward = 1, mid_stream = 0, established = 0;
    if (p->proto == 6) {
        if ((p->flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {  /* the SYN was missed, not the handshake */
            forward = 0, established = 1;
        } else if (!(p->flags & TCP_SYN)) {  /* mid-stream: the more server-like port is the server's */
            mid_stream = 1;
            int sender_is_server = port_rank(sport) < port_rank(dport) ||
                                   (port_rank(sport) == port_rank(dport) && sport < dport);
            forward = !sender_is_server;
        }
    }
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    uint8_t rk[37];
    memcpy(rk, p->dst, a), memcpy(rk + a, p->src, a);
    memcpy(rk + 2 * a, p->ports + 2, 2), memcpy(rk + 2 * a + 2, p->ports, 2);
    if (klen > 2 * a + 4) rk[2 * a + 4] = (uint8_t)p->proto;
    PyObject *reversed = PyBytes_FromStringAndSize((const char *)rk, klen);
    PyObject *src = ip_text(t, p->src, a), *dst = ip_text(t, p->dst, a), *name = proto_name(p->proto);
    PyObject *flow = NULL, *track = NULL, *fwd = NULL, *rev = NULL, *result = NULL;
    if (reversed == NULL || src == NULL || dst == NULL || name == NULL || (flow = clone_template()) == NULL) goto done;
    PyObject *fkey = key, *rkey = reversed;  /* the keys of the initiator's packets and of the answers */
    if (!forward) {  /* this packet's sender is the responder */
        PyObject *ip = src;
        unsigned port = sport;
        src = dst, dst = ip, sport = dport, dport = port;
        fkey = reversed, rkey = key;
    }
    slot_set(flow, off_protocol, Py_NewRef(name));
    slot_set(flow, off_src_ip, Py_NewRef(src));
    slot_set(flow, off_dst_ip, Py_NewRef(dst));
    slot_set(flow, off_src_port, PyLong_FromUnsignedLong(sport));
    slot_set(flow, off_dst_port, PyLong_FromUnsignedLong(dport));
    slot_set(flow, off_first_seen, Py_NewRef(ts));
    slot_set(flow, off_last_seen, Py_NewRef(ts));
    slot_set(flow, off_mid_stream, Py_NewRef(mid_stream ? Py_True : Py_False));
    slot_set(flow, off_established, Py_NewRef(established ? Py_True : Py_False));
    if (SLOT(flow, off_src_port) == NULL || SLOT(flow, off_dst_port) == NULL) goto done;
    if (p->proto == 6) {  /* mid-stream flows are tracked too, but only a TLS handshake will count */
        PyObject *seq = PyLong_FromUnsignedLong(p->seq);
        if (seq == NULL) goto done;
        /* Track(client_isn, server_isn); a SYN-ACK first: the client's ISN is unseen */
        track = PyObject_CallFunctionObjArgs((PyObject *)track_type, mid_stream || !forward ? Py_None : seq,
                                             mid_stream || forward ? Py_None : seq, NULL);
        Py_DECREF(seq);
    } else {
        track = Py_NewRef(Py_None);
    }
    if (track == NULL || (fwd = PyTuple_Pack(4, flow, Py_True, track, rkey)) == NULL ||
        (rev = PyTuple_Pack(4, flow, Py_False, track, fkey)) == NULL)
        goto done;
    /* Reverse first: when both ends are one address and port, the keys are equal and the forward entry wins. */
    if (PyDict_SetItem(t->flows, rkey, rev) < 0 || PyDict_SetItem(t->flows, fkey, fwd) < 0 ||
        call_void(t->started, PyTuple_Pack(1, forward ? fwd : rev)) < 0)
        goto done;
    result = Py_NewRef(forward ? fwd : rev);
done:
    Py_XDECREF(reversed);
    Py_XDECREF(src);
    Py_XDECREF(dst);
    Py_XDECREF(name);
    Py_XDECREF(flow);
    Py_XDECREF(track);
    Py_XDECREF(fwd);
    Py_XDECREF(rev);
    return result;
}

/* A compact flow moves to the Python table with everything counted so far, as if it had been there from
 * its first packet; returns the entry of the `forward` (initiator's) or reverse key (new reference). */
static PyObject *promote(Table *t, Compact *c, CFlow *f, int forward) {
    CFlow cf = *f;
    f->hello = NULL;  /* now cf's: freed below */
    if (cf.flags & CF_ANSWERED) c->aggs[cf.outcome].live--;  /* its end is counted in Python now */
    flow_free(c, f);
    unsigned a = cf.alen;
    uint8_t rk[37];
    size_t rlen = cf.klen;
    memcpy(rk, cf.key + a, a), memcpy(rk + a, cf.key, a);
    memcpy(rk + 2 * a, cf.key + 2 * a + 2, 2), memcpy(rk + 2 * a + 2, cf.key + 2 * a, 2);
    if (rlen > 2 * a + 4) rk[2 * a + 4] = cf.key[2 * a + 4];
    PyObject *key = PyBytes_FromStringAndSize((const char *)cf.key, cf.klen);
    PyObject *rkey = PyBytes_FromStringAndSize((const char *)rk, rlen);
    PyObject *src = ip_text(t, cf.key, a), *dst = ip_text(t, cf.key + a, a), *name = proto_name(cf.proto);
    PyObject *flow = NULL, *track = NULL, *fwd = NULL, *rev = NULL, *result = NULL;
    if (key == NULL || rkey == NULL || src == NULL || dst == NULL || name == NULL ||
        (flow = clone_template()) == NULL)
        goto done;
    slot_set(flow, off_protocol, Py_NewRef(name));
    slot_set(flow, off_src_ip, Py_NewRef(src));
    slot_set(flow, off_dst_ip, Py_NewRef(dst));
    slot_set(flow, off_src_port, PyLong_FromUnsignedLong(u16(cf.key + 2 * a)));
    slot_set(flow, off_dst_port, PyLong_FromUnsignedLong(u16(cf.key + 2 * a + 2)));
    slot_set(flow, off_first_seen, PyFloat_FromDouble(cf.first_seen));
    slot_set(flow, off_last_seen, PyFloat_FromDouble(cf.last_seen));
    slot_set(flow, off_packets_src, PyLong_FromUnsignedLongLong(cf.packets_src));
    slot_set(flow, off_bytes_src, PyLong_FromUnsignedLongLong(cf.bytes_src));
    slot_set(flow, off_packets_dst, PyLong_FromUnsignedLongLong(cf.packets_dst));
    slot_set(flow, off_bytes_dst, PyLong_FromUnsignedLongLong(cf.bytes_dst));
    slot_set(flow, off_established, Py_NewRef(cf.flags & CF_ESTABLISHED ? Py_True : Py_False));
    slot_set(flow, off_closed, Py_NewRef(cf.flags & CF_CLOSED ? Py_True : Py_False));
    slot_set(flow, off_started, Py_NewRef(cf.flags & CF_STARTED ? Py_True : Py_False));  /* START judged here */
    for (Py_ssize_t i = 0; i < n_flow_slots; i++)
        if (SLOT(flow, flow_slots[i]) == NULL) goto done;
    if (cf.proto == 6) {  /* a compact TCP flow began with a SYN: the client's ISN is known */
        PyObject *isn = PyLong_FromUnsignedLong(cf.client_isn);
        PyObject *server_isn = cf.flags & CF_SERVER_ISN ? PyLong_FromUnsignedLong(cf.server_isn) : Py_NewRef(Py_None);
        track = isn && server_isn ? PyObject_CallFunctionObjArgs((PyObject *)track_type, isn, server_isn, NULL) : NULL;
        Py_XDECREF(isn);
        Py_XDECREF(server_isn);
        if (track == NULL) goto done;
        slot_set(track, off_fins, PyLong_FromLong((cf.flags & CF_FIN_FWD ? 1 : 0) | (cf.flags & CF_FIN_REV ? 2 : 0)));
        if (SLOT(track, off_fins) == NULL) goto done;
    } else {
        track = Py_NewRef(Py_None);
    }
    if ((fwd = PyTuple_Pack(4, flow, Py_True, track, rkey)) == NULL ||
        (rev = PyTuple_Pack(4, flow, Py_False, track, key)) == NULL)
        goto done;
    if (PyDict_SetItem(t->flows, rkey, rev) < 0 || PyDict_SetItem(t->flows, key, fwd) < 0 ||
        call_void(t->started, PyTuple_Pack(1, fwd)) < 0 ||
        ((cf.flags & CF_ANSWERED) && call_void(t->adopt, Py_BuildValue("Oi", fwd, (int)cf.outcome)) < 0) ||
        /* the ClientHello held here, as the fold would have given it */
        ((cf.flags & CF_HELLO) && call_void(t->payload, Py_BuildValue("OOky#", fwd, Py_True,
                                                                      (unsigned long)(uint32_t)(cf.client_isn + 1),
                                                                      cf.hello, (Py_ssize_t)cf.hello_len)) < 0))
        goto done;
    result = Py_NewRef(forward ? fwd : rev);
done:
    PyMem_Free(cf.hello);
    Py_XDECREF(key), Py_XDECREF(rkey), Py_XDECREF(src), Py_XDECREF(dst), Py_XDECREF(name);
    Py_XDECREF(flow), Py_XDECREF(track), Py_XDECREF(fwd), Py_XDECREF(rev);
    return result;
}

/* A compact flow ends: unanswered, it is judged so (its outcome, or in Python); then its end is counted. */
static int compact_end(Table *t, Compact *c, CFlow *f) {
    if (!(f->flags & CF_ANSWERED)) {
        int32_t o = flow_outcome(c, f, ST_UNANSWERED);
        if (o < 0) {
            PyObject *entry = promote(t, c, f, 1);
            int rc = entry ? call_void(t->end, PyTuple_Pack(1, entry)) : -1;
            Py_XDECREF(entry);
            return rc;
        }
        apply_answer(c, f, o);
    }
    c->aggs[f->end_as].ends++;
    c->aggs[f->outcome].live--;
    c->ended++;
    flow_free(c, f);
    return 0;
}

/* Table pressure (FlowTable._evict): end the `batch` oldest compact flows. */
static Py_ssize_t compact_evict(Table *t, Compact *c, Py_ssize_t batch, double now) {
    Py_ssize_t ended = 0;
    while (ended < batch && c->age_len) {
        CFlow *f = due_flow(c, ring_pop(c->ages, &c->age_head, &c->age_len, c->age_cap));
        if (f == NULL) continue;
        if (compact_end(t, c, f) < 0) return -1;
        ended++;
    }
    if (ended) c->evicted += ended, c->last_shed = now;
    return ended;
}

/* A packet of a compact flow: 1 when folded here, 0 when the flow was promoted (*entry set), -1 on error.
 * Its first bytes stay here only when decode/app.py would decide them alike and no judge minds: an HTTP
 * request, or a whole ClientHello answered by a whole ServerHello (the version is counted here). */
static int compact_packet(Table *t, Compact *c, CFlow *f, int forward, const Packet *p, double ts,
                          PyObject **entry) {
    int refusal = p->proto == 6 && (p->flags & TCP_RST), payload = p->end > p->start;
    int answering = !forward && !(f->flags & CF_ANSWERED);
    const uint8_t *data = p->frame + p->start;
    Py_ssize_t len = p->end - p->start;
    int32_t o = 0;  /* < 0: promote */
    int version = -1;
    if (p->proto == 6 && payload && !(f->flags & CF_CLASSIFIED)) {
        Aggregate *g = f->flags & CF_ANSWERED ? &c->aggs[f->outcome] : NULL;
        if (g == NULL) {
            o = -1;  /* bytes before the answer: classified in Python */
        } else if (f->flags & CF_HELLO) {
            /* more client bytes cannot change the answer; the server's first must be a ServerHello */
            if (!forward && !((f->flags & CF_SERVER_ISN) && p->seq == (uint32_t)(f->server_isn + 1) &&
                              (version = server_hello_version(data, len)) >= 0))
                o = -1;
        } else if (forward && p->seq == (uint32_t)(f->client_isn + 1) && g->plain_ok && http_request(data, len)) {
            f->flags |= CF_CLASSIFIED;
        } else if (forward && p->seq == (uint32_t)(f->client_isn + 1) && g->tls_ok && client_hello(data, len)) {
            if ((f->hello = PyMem_Malloc(len)) == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memcpy(f->hello, data, len);
            f->hello_len = (uint32_t)len;
            f->flags |= CF_HELLO;
        } else {
            o = -1;
        }
    } else if (answering) {
        o = flow_outcome(c, f, refusal ? ST_REFUSED : ST_ESTABLISHED);
    }
    if (o < 0) {
        *entry = promote(t, c, f, forward);
        return *entry ? 0 : -1;
    }
    f->last_seen = ts;
    if (forward) {
        f->packets_src++, f->bytes_src += (uint64_t)p->total;
    } else {
        f->packets_dst++, f->bytes_dst += (uint64_t)p->total;
        if (!refusal) f->flags |= CF_ESTABLISHED;
        if (p->proto == 6 && (p->flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && !payload &&
            !(f->flags & CF_SERVER_ISN))
            f->server_isn = p->seq, f->flags |= CF_SERVER_ISN;  /* FlowTable._server_start */
    }
    if (p->proto == 6 && (p->flags & (TCP_FIN | TCP_RST))) {
        if (p->flags & TCP_RST) f->flags |= CF_CLOSED;
        else f->flags |= forward ? CF_FIN_FWD : CF_FIN_REV;
        if ((f->flags & (CF_FIN_FWD | CF_FIN_REV)) == (CF_FIN_FWD | CF_FIN_REV)) f->flags |= CF_CLOSED;
    }
    if (version >= 0) {
        c->aggs[f->outcome].tls[version]++;
        f->flags = (f->flags & ~CF_HELLO) | CF_CLASSIFIED;
        PyMem_Free(f->hello);
        f->hello = NULL;
    }
    if (answering) apply_answer(c, f, o);
    return 1;
}

/* A new flow starts compact when its first packet is a bare SYN or UDP (not to port 53 while a judge reads DNS
 * names) and both ends have an identity: 1 if so.
 * Whether its answer's outcome is known is asked at the answer (unknown: promoted then). */
static int compact_start(Table *t, Compact *c, const Packet *p, const uint8_t *key, size_t klen, double ts) {
    if (!c->configured) return 0;
    if (p->proto == 6 ? (p->flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN || p->end > p->start
                      : p->proto != 17)
        return 0;
    if (t->datagram != NULL && p->proto == 17 && u16(p->ports + 2) == 53)
        return 0;  /* a judge reads its query's name (FoldHooks.datagram): a Python flow */
    uint32_t ends[4];
    if (!ident_of(c, p->src, p->alen, ts, 0, &ends[0], &ends[1]) ||
        !ident_of(c, p->dst, p->alen, ts, 1, &ends[2], &ends[3]))
        return 0;
    unsigned dport = u16(p->ports + 2);
    uint32_t port = c->port_named[dport] ? dport : PORT_OTHER;
    int32_t started = -1;
    if (c->start_judges) {  /* what they say of its key must be known, else Python hears them now */
        CFlow probe = {.src = ends[0], .src_class = ends[1], .dst = ends[2], .dst_class = ends[3], .port = port,
                       .proto = (uint8_t)p->proto, .same = memcmp(p->src, p->dst, p->alen) == 0};
        if ((started = flow_outcome(c, &probe, ST_START)) < 0) return 0;
    }
    CFlow *f = flow_new(c, p, key, klen, ts, ends, port);
    if (f == NULL) return PyErr_Occurred() ? -1 : 0;
    if (started >= 0) {  /* as FlowTable._started: before the first packet is counted */
        add_to(c, f, started);
        f->flags |= CF_STARTED;
    }
    f->packets_src = 1, f->bytes_src = (uint64_t)p->total;
    if ((Py_ssize_t)c->n_flows + PyDict_GET_SIZE(t->flows) / 2 > c->max_flows) {
        PyObject *now = PyFloat_FromDouble(ts);
        if (now == NULL || call_void(t->evict, PyTuple_Pack(1, now)) < 0) {
            Py_XDECREF(now);
            return -1;
        }
        Py_DECREF(now);
    }
    return 1;
}

/* One frame into its flow; mirrors FlowTable._fold. `ts` is borrowed; `when` is its value. */
static int fold(Table *t, PyObject *ts, double when, long long linktype, const uint8_t *frame, Py_ssize_t n) {
    Packet p;
    int outcome = decode(linktype, frame, n, &p);
    if (outcome != DECODED) return count_reason(outcome == DROP ? t->dropped : t->skipped, &p);
    int rc = -1;
    uint8_t raw[37];
    size_t klen = raw_key(&p, raw);
    PyObject *entry = NULL, *key = NULL;
    Compact *c = t->compact;
    if (c != NULL) {
        int forward;
        CFlow *f = flow_find(c, raw, klen, &forward, NULL);
        if (f != NULL && p.proto == 6 && (p.flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && (f->flags & CF_CLOSED)) {
            if (compact_end(t, c, f) < 0) return -1;  /* the 5-tuple is reused by a new connection */
            f = NULL;
        }
        if (f != NULL) {
            int r = compact_packet(t, c, f, forward, &p, when, &entry);
            if (r != 0) return r < 0 ? -1 : 0;
        }
    }
    if ((key = PyBytes_FromStringAndSize((const char *)raw, klen)) == NULL) goto done;
    if (entry == NULL) {
        entry = PyDict_GetItemWithError(t->flows, key);
        if (entry == NULL && PyErr_Occurred()) goto done;
        Py_XINCREF(entry);
        if (entry == NULL && c != NULL) {
            int r = compact_start(t, c, &p, raw, klen, when);
            if (r != 0) {
                rc = r < 0 ? -1 : 0;
                goto done;
            }
        }
    }
    if (entry != NULL && entry_check(entry) < 0) goto done;
    if (entry == NULL && p.proto == 6 && !(p.flags & TCP_SYN) && p.end <= p.start) {
        /* A bare ACK, FIN or RST of no known flow starts none (FlowTable._fold: STRAY). */
        p.reason = "tcp-stray", p.number = -1;
        rc = count_reason(t->skipped, &p);
        goto done;
    }
    if (entry == NULL || (p.proto == 6 && (p.flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
                          SLOT(PyTuple_GET_ITEM(entry, 0), off_closed) == Py_True)) {
        if (entry != NULL) {  /* the 5-tuple is reused by a new connection */
            if (call_void(t->end, PyTuple_Pack(1, entry)) < 0) goto done;
            Py_CLEAR(entry);
        }
        if ((entry = start_flow(t, ts, &p, key)) == NULL) goto done;
    }
    PyObject *flow = PyTuple_GET_ITEM(entry, 0), *track = PyTuple_GET_ITEM(entry, 2);
    int forward = PyTuple_GET_ITEM(entry, 1) == Py_True;
    Py_INCREF(ts);
    slot_set(flow, off_last_seen, ts);
    if (forward) {
        if (slot_add(flow, off_packets_src, 1) < 0 || slot_add(flow, off_bytes_src, p.total) < 0) goto done;
        /* The initiator's first UDP/53 datagram: FlowTable._datagram reads its query's name. */
        if (t->datagram != NULL && p.proto == 17 && p.end > p.start && u16(p.ports + 2) == 53 &&
            PyLong_CheckExact(SLOT(flow, off_packets_src)) && PyLong_AsLong(SLOT(flow, off_packets_src)) == 1) {
            PyObject *payload = PyBytes_FromStringAndSize((const char *)frame + p.start, p.end - p.start);
            if (call_void(t->datagram, payload ? PyTuple_Pack(2, entry, payload) : NULL) < 0) {
                Py_XDECREF(payload);
                goto done;
            }
            Py_DECREF(payload);
        }
    } else {
        if (slot_add(flow, off_packets_dst, 1) < 0 || slot_add(flow, off_bytes_dst, p.total) < 0) goto done;
        /* An answer establishes the flow; a TCP RST or an SCTP ABORT is a refusal. */
        if (SLOT(flow, off_established) != Py_True &&
            !(p.proto == 6 ? p.flags & TCP_RST : p.proto == 132 && p.flags == SCTP_ABORT)) {
            Py_INCREF(Py_True);
            slot_set(flow, off_established, Py_True);
        }
        /* The responder's first packet: FlowTable._answered. */
        if (PyLong_CheckExact(SLOT(flow, off_packets_dst)) && PyLong_AsLong(SLOT(flow, off_packets_dst)) == 1 &&
            call_void(t->answered, PyTuple_Pack(1, entry)) < 0)
            goto done;
    }
    if (p.proto == 6 && track != Py_None) {
        if (p.flags & (TCP_FIN | TCP_RST) && close_flow(flow, track, p.flags, forward) < 0) goto done;
        if (SLOT(track, off_result) == Py_None) {
            if (p.end > p.start) {
                PyObject *payload = PyBytes_FromStringAndSize((const char *)frame + p.start, p.end - p.start);
                /* data on a SYN (TCP Fast Open) starts one after its sequence number */
                uint32_t seq = p.flags & TCP_SYN ? p.seq + 1 : p.seq;
                if (call_void(t->payload, Py_BuildValue("OOkN", entry, forward ? Py_True : Py_False,
                                                        (unsigned long)seq, payload)) < 0)
                    goto done;
            } else if ((p.flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && !forward &&
                       SLOT(track, off_server) == Py_None && SLOT(track, off_server_isn) == Py_None) {
                if (call_void(t->server, Py_BuildValue("Ok", track, (unsigned long)p.seq)) < 0) goto done;
            }
        }
    }
    rc = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(entry);
    return rc;
}

/* ----------------------------------------------------------- entry points */

static PyObject *py_decode(PyObject *self, PyObject *args) {
    long long linktype;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "Ly*", &linktype, &frame)) return NULL;
    Packet p;
    int outcome = decode(linktype, frame.buf, frame.len, &p);
    PyObject *result = NULL;
    if (outcome == DECODED) {
        PyObject *key = packet_key(&p);
        if (key) result = Py_BuildValue("INIknnn", p.proto, key, p.flags, (unsigned long)p.seq,
                                        p.start, p.end, p.total);
    } else if (decode_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._hotpath.setup() was not called");
    } else {
        PyObject *reason = packet_reason(&p);
        if (reason) {
            PyErr_SetObject(outcome == DROP ? decode_error : skip_error, reason);
            Py_DECREF(reason);
        }
    }
    PyBuffer_Release(&frame);
    return result;
}

static PyObject *py_ingest(PyObject *self, PyObject *args) {
    PyObject *table, *frames, *last = NULL;
    if (!PyArg_ParseTuple(args, "OO!", &table, &PyList_Type, &frames)) return NULL;
    Table t;
    if (table_bind(&t, table) < 0) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(frames); i++) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "a frame is a (timestamp, linktype, bytes) tuple");
            goto fail;
        }
        PyObject *ts = PyTuple_GET_ITEM(item, 0);
        Py_XSETREF(last, Py_NewRef(ts));  /* held: a callback may change the list */
        long long linktype = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 1));
        if (linktype == -1 && PyErr_Occurred()) goto fail;
        Py_buffer frame;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 2), &frame, PyBUF_SIMPLE) < 0) goto fail;
        double when = PyFloat_AsDouble(ts);
        int rc = when == -1.0 && PyErr_Occurred() ? -1 : fold(&t, last, when, linktype, frame.buf, frame.len);
        PyBuffer_Release(&frame);
        if (rc < 0) goto fail;
    }
    table_release(&t);
    if (last == NULL) Py_RETURN_NONE;
    return last;
fail:
    Py_XDECREF(last);
    table_release(&t);
    return NULL;
}

typedef struct { uint32_t sec, frac, incl; } Record;

static inline uint32_t rd32(const uint8_t *b, int big) {
    return big ? u32be(b) : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

static inline Record record_at(const uint8_t *b, int big) {
    Record r = {rd32(b, big), rd32(b + 4, big), rd32(b + 8, big)};
    return r;
}

/* The record at `pos` of a block from scan_pcap; -1 (ValueError) when it runs past the block's end. */
static int block_record(const uint8_t *b, Py_ssize_t pos, Py_ssize_t end, int big, Record *r) {
    *r = record_at(b + pos, big);
    if ((Py_ssize_t)r->incl <= end - pos - 16) return 0;
    PyErr_SetString(PyExc_ValueError, "a record runs past the end of its block");
    return -1;
}

static inline double record_ts(Record r, int nanos) {  /* as the Python reader: sec + frac * scale */
    return (double)r.sec + (double)r.frac * (nanos ? 1e-9 : 1e-6);
}

static int parse_block(PyObject *args, Py_buffer *buf, Py_ssize_t *start, Py_ssize_t *end, long long *linktype,
                       int *big, int *nanos, PyObject **table) {
    if (table != NULL) {
        if (!PyArg_ParseTuple(args, "Oy*nnLpp", table, buf, start, end, linktype, big, nanos)) return -1;
    } else if (!PyArg_ParseTuple(args, "y*nnLpp", buf, start, end, linktype, big, nanos)) {
        return -1;
    }
    if (*start < 0 || *end > buf->len || *start > *end) {
        PyBuffer_Release(buf);
        PyErr_SetString(PyExc_ValueError, "record block out of the buffer's bounds");
        return -1;
    }
    return 0;
}

static PyObject *py_scan_pcap(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, count = 0;
    int big;
    if (!PyArg_ParseTuple(args, "y*np", &buf, &pos, &big)) return NULL;
    while (pos >= 0 && pos + 16 <= buf.len) {
        Py_ssize_t incl = rd32((const uint8_t *)buf.buf + pos + 8, big);
        if (incl > buf.len - pos - 16) break;
        count++, pos += 16 + incl;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("nn", pos, count);
}

static PyObject *py_ingest_pcap(PyObject *self, PyObject *args) {
    PyObject *table, *last = NULL;
    Py_buffer buf;
    Py_ssize_t pos, end;
    long long linktype;
    int big, nanos;
    if (parse_block(args, &buf, &pos, &end, &linktype, &big, &nanos, &table) < 0) return NULL;
    Table t;
    if (table_bind(&t, table) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *b = buf.buf;
    while (pos + 16 <= end) {
        Record r;
        if (block_record(b, pos, end, big, &r) < 0) goto fail;
        double when = record_ts(r, nanos);
        Py_XSETREF(last, PyFloat_FromDouble(when));
        if (last == NULL || fold(&t, last, when, linktype, b + pos + 16, r.incl) < 0) goto fail;
        pos += 16 + (Py_ssize_t)r.incl;
    }
    table_release(&t);
    PyBuffer_Release(&buf);
    if (last == NULL) Py_RETURN_NONE;
    return last;
fail:
    Py_XDECREF(last);
    table_release(&t);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyObject *py_records(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, end;
    long long linktype;
    int big, nanos;
    if (parse_block(args, &buf, &pos, &end, &linktype, &big, &nanos, NULL) < 0) return NULL;
    PyObject *frames = PyList_New(0);
    const uint8_t *b = buf.buf;
    while (frames != NULL && pos + 16 <= end) {
        Record r;
        if (block_record(b, pos, end, big, &r) < 0) {
            Py_CLEAR(frames);
            break;
        }
        PyObject *frame = Py_BuildValue("dLy#", record_ts(r, nanos), linktype, b + pos + 16, (Py_ssize_t)r.incl);
        if (frame == NULL || PyList_Append(frames, frame) < 0) Py_CLEAR(frames);
        Py_XDECREF(frame);
        pos += 16 + (Py_ssize_t)r.incl;
    }
    PyBuffer_Release(&buf);
    return frames;
}

/* compact_expire(table, now), compact_sweep(table, now), compact_flush(table): the compact flows' deadlines,
 * idle ends and the end of a run; each may promote a flow and call the table's hooks. */
enum { C_EXPIRE, C_SWEEP, C_FLUSH };

static PyObject *compact_walk(PyObject *args, int what) {
    PyObject *table;
    double now = 0.0;
    if (what == C_FLUSH ? !PyArg_ParseTuple(args, "O", &table) : !PyArg_ParseTuple(args, "Od", &table, &now))
        return NULL;
    Table t;
    if (table_bind(&t, table) < 0) return NULL;
    Compact *c = t.compact;
    int rc = 0;
    if (c != NULL && what == C_EXPIRE) {
        while (rc == 0 && c->due_len && c->dues[c->due_head].when <= now) {
            CFlow *f = due_flow(c, ring_pop(c->dues, &c->due_head, &c->due_len, c->due_cap));
            if (f == NULL || (f->flags & CF_ANSWERED)) continue;
            int32_t o = flow_outcome(c, f, ST_UNANSWERED);
            if (o >= 0) {
                apply_answer(c, f, o);
                continue;
            }
            PyObject *entry = promote(&t, c, f, 1);  /* unanswered, judged in Python */
            rc = entry ? call_void(t.answered, PyTuple_Pack(1, entry)) : -1;
            Py_XDECREF(entry);
        }
    } else if (c != NULL) {
        for (uint32_t i = 0; rc == 0 && i < c->flow_cap; i++) {
            CFlow *f = &c->flows[i];
            if (f->serial == 0) continue;
            double idle = f->flags & CF_CLOSED ? c->closed_linger : f->proto == 6 ? c->tcp_timeout : c->udp_timeout;
            if (what == C_FLUSH || now - f->last_seen >= idle) rc = compact_end(&t, c, f);
        }
        if (rc == 0) rc = compact_tidy(c);
    }
    table_release(&t);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_compact_expire(PyObject *self, PyObject *args) { return compact_walk(args, C_EXPIRE); }

static PyObject *py_compact_evict(PyObject *self, PyObject *args) {
    PyObject *table;
    Py_ssize_t batch;
    double now;
    if (!PyArg_ParseTuple(args, "Ond", &table, &batch, &now)) return NULL;
    Table t;
    if (table_bind(&t, table) < 0) return NULL;
    Py_ssize_t ended = t.compact != NULL ? compact_evict(&t, t.compact, batch, now) : 0;
    table_release(&t);
    return ended < 0 ? NULL : PyLong_FromSsize_t(ended);
}
static PyObject *py_compact_sweep(PyObject *self, PyObject *args) { return compact_walk(args, C_SWEEP); }
static PyObject *py_compact_flush(PyObject *self, PyObject *args) { return compact_walk(args, C_FLUSH); }

static PyMethodDef compact_methods[] = {
    {"configure", (PyCFunction)compact_configure, METH_VARARGS,
     "configure(addresses, v4, v6, ports): identities of addresses, CIDR intervals, ports policies name."},
    {"settings", (PyCFunction)compact_settings, METH_VARARGS,
     "settings(answer_timeout, tcp_timeout, udp_timeout, closed_linger, max_flows, start_judges)."},
    {"remember", (PyCFunction)compact_remember, METH_VARARGS,
     "remember(src, dst, port, proto, state, first_seen, outcome, spread) -> bool: a judged answer's outcome."},
    {"oldest", (PyCFunction)compact_oldest, METH_O, "oldest(n) -> the first_seen of the n oldest compact flows."},
    {"drain", (PyCFunction)compact_drain, METH_NOARGS,
     "drain() -> [(outcome, count, first, last, packets, bytes, established, ends, ports, sources)]."},
    {"live", (PyCFunction)compact_live, METH_O, "live(outcome) -> compact flows answered under it, not ended."},
    {"forget_outcome", (PyCFunction)compact_forget_outcome, METH_O,
     "forget_outcome(outcome): no new flow gets it (its event group ended)."},
    {"collect_sources", (PyCFunction)compact_collect_sources, METH_VARARGS,
     "collect_sources(outcome, bool): whether an attempt outcome still reports its sources."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef compact_getset[] = {
    {"counts", (getter)compact_counts, NULL, "(ended, evicted, last_shed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods compact_sequence = {.sq_length = (lenfunc)compact_len};

static PyTypeObject CompactType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._hotpath.Compact",
    .tp_basicsize = sizeof(Compact),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compact flow table (agent/_compact.h).",
    .tp_new = compact_new,
    .tp_dealloc = (destructor)compact_dealloc,
    .tp_methods = compact_methods,
    .tp_getset = compact_getset,
    .tp_as_sequence = &compact_sequence,
};

/* ------------------------------------------------- live capture: ring blocks -> records */

#include "_capture.h"

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(DecodeError, Skip): what decode raises."},
    {"flow_types", flow_types, METH_VARARGS,
     "flow_types(Flow, Track, template, PROTOCOLS): what the fold makes and updates."},
    {"decode", py_decode, METH_VARARGS, "decode(linktype, frame): as agent.decode.packet.decode_frame."},
    {"ingest", py_ingest, METH_VARARGS, "ingest(table, frames) -> last timestamp: fold frames into a FlowTable."},
    {"scan_pcap", py_scan_pcap, METH_VARARGS,
     "scan_pcap(buf, pos, big_endian) -> (end, count) of the complete records from pos."},
    {"ingest_pcap", py_ingest_pcap, METH_VARARGS,
     "ingest_pcap(table, buf, start, end, linktype, big_endian, nanos) -> last timestamp."},
    {"records", py_records, METH_VARARGS,
     "records(buf, start, end, linktype, big_endian, nanos) -> [(ts, linktype, frame)]."},
    {"compact_expire", py_compact_expire, METH_VARARGS, "compact_expire(table, now): answer deadlines passed."},
    {"compact_evict", py_compact_evict, METH_VARARGS,
     "compact_evict(table, batch, now) -> ended: the `batch` oldest compact flows."},
    {"compact_sweep", py_compact_sweep, METH_VARARGS, "compact_sweep(table, now): end idle compact flows."},
    {"compact_flush", py_compact_flush, METH_VARARGS, "compact_flush(table): end every compact flow."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "agent._hotpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hotpath(void) {
    if (PyType_Ready(&CompactType) < 0 || PyType_Ready(&CaptureFilterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Compact", (PyObject *)&CompactType) < 0) Py_CLEAR(m);
    if (m != NULL && PyModule_AddObjectRef(m, "CaptureFilter", (PyObject *)&CaptureFilterType) < 0) Py_CLEAR(m);
    return m;
}
