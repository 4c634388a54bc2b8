/* SPDX-License-Identifier: Apache-2.0
 *
 * l3ns DPDK shim: exported wrappers around DPDK 22.11's static inline functions (burst I/O,
 * mbuf helpers, rte_errno, lcore id) and around the calls whose argument structs we do not
 * want to mirror in Rust (rte_eth_conf, rte_eth_dev_info, rte_eth_stats). The Rust side
 * (dataplane/src/port/dpdk.rs) declares exactly these functions; keep both in sync.
 *
 * Everything here is thin: no allocation, no locking, no logging on the fast path.
 */
#include <rte_config.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <rte_debug.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_interrupts.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_prefetch.h>

/* ---- errors, lcores ---------------------------------------------------------------------- */

int l3ns_rte_errno(void) { return rte_errno; }

const char *l3ns_rte_strerror(int errnum) { return rte_strerror(errnum); }

unsigned int l3ns_lcore_id(void) { return rte_lcore_id(); }

/* RTE_MAX_ETHPORTS of this DPDK build (port ids are below it). */
uint16_t l3ns_max_ethports(void) { return RTE_MAX_ETHPORTS; }

/* ---- device setup ------------------------------------------------------------------------- */

/* The parts of rte_eth_dev_info the Rust side needs. */
struct l3ns_dev_caps {
	uint64_t flow_type_rss_offloads;
	uint32_t max_rx_pktlen;
	uint16_t max_rx_queues;
	uint16_t max_tx_queues;
	uint16_t min_mtu;
	uint16_t max_mtu;
	int32_t socket_id;
	char driver_name[64];
};

int l3ns_dev_caps(uint16_t port_id, struct l3ns_dev_caps *out)
{
	struct rte_eth_dev_info info;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = rte_eth_dev_info_get(port_id, &info);
	if (ret != 0)
		return ret;
	out->flow_type_rss_offloads = info.flow_type_rss_offloads;
	out->max_rx_pktlen = info.max_rx_pktlen;
	out->max_rx_queues = info.max_rx_queues;
	out->max_tx_queues = info.max_tx_queues;
	out->min_mtu = info.min_mtu;
	out->max_mtu = info.max_mtu;
	out->socket_id = rte_eth_dev_socket_id(port_id);
	if (info.driver_name != NULL) {
		strncpy(out->driver_name, info.driver_name, sizeof(out->driver_name) - 1);
		out->driver_name[sizeof(out->driver_name) - 1] = '\0';
	}
	return 0;
}

/* The IPv4 hash types the Rust side asks for (addresses only, so that all fragments and all
 * protocols between two hosts land on one queue). */
uint64_t l3ns_rss_ipv4_mask(void)
{
	return RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_FRAG_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_OTHER;
}

/* rte_eth_dev_configure with `nb_queues` rx and tx queues. `rss_hf` == 0: no RSS (the device
 * spreads frames itself, or there is one queue); otherwise RSS with the default key over
 * exactly these hash types. Returns 0 or a negative errno. */
int l3ns_dev_configure(uint16_t port_id, uint16_t nb_queues, uint64_t rss_hf)
{
	struct rte_eth_conf conf;

	memset(&conf, 0, sizeof(conf));
	if (rss_hf != 0) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_key = NULL;
		conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
	} else {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
	}
	conf.txmode.mq_mode = RTE_ETH_MQ_TX_NONE;
	return rte_eth_dev_configure(port_id, nb_queues, nb_queues, &conf);
}

/* The counters of rte_eth_stats that l3ns exports. */
struct l3ns_port_stats {
	uint64_t ipackets;
	uint64_t opackets;
	uint64_t ibytes;
	uint64_t obytes;
	uint64_t imissed;
	uint64_t ierrors;
	uint64_t oerrors;
	uint64_t rx_nombuf;
};

int l3ns_stats_get(uint16_t port_id, struct l3ns_port_stats *out)
{
	struct rte_eth_stats s;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = rte_eth_stats_get(port_id, &s);
	if (ret != 0)
		return ret;
	out->ipackets = s.ipackets;
	out->opackets = s.opackets;
	out->ibytes = s.ibytes;
	out->obytes = s.obytes;
	out->imissed = s.imissed;
	out->ierrors = s.ierrors;
	out->oerrors = s.oerrors;
	out->rx_nombuf = s.rx_nombuf;
	return 0;
}

/* 1 when the port's link is up, 0 when down, a negative errno on failure (no waiting). */
int l3ns_link_up(uint16_t port_id)
{
	struct rte_eth_link link;
	int ret;

	memset(&link, 0, sizeof(link));
	ret = rte_eth_link_get_nowait(port_id, &link);
	if (ret != 0)
		return ret;
	return link.link_status == RTE_ETH_LINK_UP;
}

/* Usable data room of a fresh mbuf from `pool` (data room minus headroom). */
uint16_t l3ns_pool_data_room(struct rte_mempool *pool)
{
	uint16_t room = rte_pktmbuf_data_room_size(pool);
	return room > RTE_PKTMBUF_HEADROOM ? (uint16_t)(room - RTE_PKTMBUF_HEADROOM) : 0;
}

/* ---- bursts against a driver's disconnect ------------------------------------------------ */

/* DPDK 22.11's net_memif handles its peer leaving in the EAL interrupt thread
 * (memif_disconnect): it marks the link down, clears the device's "connected" flag, unmaps
 * the shared regions and frees their descriptors, without waiting for a burst that another
 * thread started before the flag was cleared. That burst then reads or writes unmapped
 * memory, and the process dies of SIGSEGV (l3nsd as a memif server on the development
 * machine: 3 of 5 client departures in one run). A second window opens when a new peer
 * connects soon after: a burst reads the region pointer, is preempted, and by the time it
 * reads the "connected" flag the old regions are gone and the next connection has set the
 * flag; it then follows the stale pointer (seen on a loaded CI machine and here with three
 * busy processes beside `dataplane/tests/dpdk.rs` `memif_peer_leaving_mid_burst`: ring
 * address 0x1100000000 read from a freed region descriptor).
 *
 * The guard closes both windows from outside the driver. Every rx/tx burst of the shim runs
 * between two increments of its thread's sequence number (odd while inside, with a full fence
 * after the first), and `munmap`, when the interrupt thread calls it, counts one more unmap
 * and then waits until every thread that was inside a burst has left it. On a port marked
 * with `l3ns_gate_on_link` (l3ns marks its memif ports), a burst that finds the unmap count
 * changed since it last saw the link up goes into the driver only if the link is up now. The
 * driver marks the link up last when it connects and down first when it disconnects, before
 * it unmaps; so a burst either started before the unmap's wait (which then waits for it,
 * and the regions it reads stay mapped and allocated until it leaves), or it reads the new
 * count and then the link: down, and it touches nothing of the driver; up, and it works on
 * a connection made after the one being torn down. This is the classic store-fence-load
 * handshake on both sides (count increment, fence, sequence load in the interrupt thread;
 * sequence exchange, count load in the worker). The executable exports `munmap` (the
 * crates' build scripts pass `--export-dynamic-symbol=munmap`) so that the drivers, loaded
 * as plugins, call this definition; every other thread, and the interrupt thread before
 * `l3ns_burst_guard_enable`, goes straight to the system call. (A program that links this
 * shim without exporting `munmap` still works; its drivers then call libc's, and the race is
 * back.) The cost on the fast path is one locked exchange per burst call (some 40 cycles per
 * 32 frames) and, on a gated port, two loads from lines that are written only when a peer
 * leaves: no difference beyond the VM's noise on l3nsd's memif receive rate (9.04 vs 9.05
 * Mpps, 3 runs each alternating; slot list: 8.38-8.60 vs 8.67-8.72 slow mode, 11.31 vs
 * 10.95-11.32 fast mode). */

/* One slot per thread that ever bursts, on its own cache line, in a list that only grows
 * (a thread's slot outlives it: 64 bytes per thread). */
struct l3ns_guard_slot {
	_Atomic uint64_t seq;
	struct l3ns_guard_slot *next;
} __attribute__((aligned(64)));

static _Atomic(struct l3ns_guard_slot *) l3ns_guard_slots;
static atomic_int l3ns_guard_on;
static _Thread_local struct l3ns_guard_slot *l3ns_my_slot;
/* Ports whose bursts go into the driver only while the link is up. Reading the link on every
 * burst costs a call through ethdev into the driver (-1.5% of l3nsd's memif receive rate,
 * 4 runs each alternating), so a burst reads it only when the interrupt thread has unmapped
 * something since this port's link was last seen up: `l3ns_unmap_epoch` counts those unmaps
 * (from 1), `l3ns_link_seen_up[port]` holds the count under which the link was last read
 * up (0: not yet). */
static _Atomic uint8_t l3ns_link_gated[RTE_MAX_ETHPORTS];
static _Atomic uint64_t l3ns_unmap_epoch = 1;
static _Atomic uint64_t l3ns_link_seen_up[RTE_MAX_ETHPORTS];

void l3ns_burst_guard_enable(void) { atomic_store(&l3ns_guard_on, 1); }

void l3ns_gate_on_link(uint16_t port_id, int on)
{
	if (port_id >= RTE_MAX_ETHPORTS)
		return;
	atomic_store(&l3ns_link_seen_up[port_id], 0);
	atomic_store(&l3ns_link_gated[port_id], on != 0);
}

/* Inside the bracket: may this burst go into the driver? The epoch is read after the
 * bracket's fence, so a burst that the unmap's wait did not see reads the new count, and
 * then the link, which the driver marked down before unmapping. */
static inline int l3ns_may_burst(uint16_t port_id)
{
	uint64_t epoch;

	if (__builtin_expect(port_id >= RTE_MAX_ETHPORTS ||
				     !atomic_load_explicit(&l3ns_link_gated[port_id],
							   memory_order_relaxed),
			     1))
		return 1;
	epoch = atomic_load_explicit(&l3ns_unmap_epoch, memory_order_seq_cst);
	if (__builtin_expect(epoch == atomic_load_explicit(&l3ns_link_seen_up[port_id],
							   memory_order_relaxed),
			     1))
		return 1;
	if (l3ns_link_up(port_id) != 1)
		return 0;
	atomic_store_explicit(&l3ns_link_seen_up[port_id], epoch, memory_order_relaxed);
	return 1;
}

static struct l3ns_guard_slot *l3ns_slot(void)
{
	struct l3ns_guard_slot *s = l3ns_my_slot;

	if (__builtin_expect(s == NULL, 0)) {
		s = aligned_alloc(64, sizeof(*s));
		if (s == NULL)
			rte_panic("l3ns: no memory for a thread's burst guard slot\n");
		atomic_init(&s->seq, 0);
		s->next = atomic_load(&l3ns_guard_slots);
		while (!atomic_compare_exchange_weak(&l3ns_guard_slots, &s->next, s))
			;
		l3ns_my_slot = s;
	}
	return s;
}

static inline struct l3ns_guard_slot *l3ns_enter(void)
{
	struct l3ns_guard_slot *s = l3ns_slot();

	/* Odd: inside. The exchange is a full fence on x86 and seq_cst elsewhere. */
	atomic_exchange_explicit(&s->seq, atomic_load_explicit(&s->seq, memory_order_relaxed) + 1,
				 memory_order_seq_cst);
	return s;
}

static inline void l3ns_leave(struct l3ns_guard_slot *s)
{
	atomic_store_explicit(&s->seq, atomic_load_explicit(&s->seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

/* Waits until every thread inside a burst now has left it: until its slot's number changes,
 * spinning, with a short sleep every 1,024 rounds. There is no time limit: a burst preempted
 * on a loaded machine can take tens of milliseconds, and unmapping under it kills the
 * process. (A thread that never leaves its burst holds the port for good anyway.) */
static void l3ns_wait_for_bursts(void)
{
	struct l3ns_guard_slot *s;

	atomic_thread_fence(memory_order_seq_cst);
	for (s = atomic_load(&l3ns_guard_slots); s != NULL; s = s->next) {
		uint64_t seen = atomic_load_explicit(&s->seq, memory_order_acquire);
		unsigned long spins = 0;

		if ((seen & 1) == 0)
			continue;
		while (atomic_load_explicit(&s->seq, memory_order_acquire) == seen) {
			if ((++spins & 1023) == 0) {
				struct timespec ts = { 0, 1000 };
				nanosleep(&ts, NULL);
			}
			rte_pause();
		}
	}
}

int munmap(void *addr, size_t len)
{
	if (atomic_load_explicit(&l3ns_guard_on, memory_order_relaxed) && rte_thread_is_intr()) {
		atomic_fetch_add(&l3ns_unmap_epoch, 1);
		l3ns_wait_for_bursts();
	}
	return (int)syscall(SYS_munmap, addr, len);
}

/* ---- fast path ----------------------------------------------------------------------------- */

/* rte_eth_rx_burst, and for each received mbuf its data pointer and length, so that Rust
 * needs no per-packet call. `lens[i]` is data_len of the first segment; `segs_ok[i]` is 0 when
 * the frame is chained over several segments (pkt_len != data_len). The first packets' data is
 * prefetched; the Rust loop prefetches the rest ahead of use. */
uint16_t l3ns_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **mbufs,
		       uint8_t **datas, uint16_t *lens, uint8_t *segs_ok, uint16_t nb)
{
	struct l3ns_guard_slot *g = l3ns_enter();
	uint16_t n = l3ns_may_burst(port_id) ? rte_eth_rx_burst(port_id, queue_id, mbufs, nb) : 0;
	uint16_t i;

	l3ns_leave(g);

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mbufs[i];
		datas[i] = rte_pktmbuf_mtod(m, uint8_t *);
		lens[i] = rte_pktmbuf_data_len(m);
		segs_ok[i] = (rte_pktmbuf_pkt_len(m) == rte_pktmbuf_data_len(m));
		if (i < 2)
			rte_prefetch0(datas[i]);
	}
	return n;
}

void l3ns_prefetch0(const void *p) { rte_prefetch0(p); }

/* Frees `n` mbufs (whole chains). A burst the receive path is done with is usually n
 * single-segment, direct mbufs of one pool that nobody else holds: those go straight back to
 * the pool's per-lcore cache in one put, reading only the mbufs' first cache line (which the
 * receive burst just read). A single-segment mbuf's `next` is NULL (an mbuf invariant), so
 * its second line, where `next` sits, is not read as rte_pktmbuf_free_bulk reads it for every
 * mbuf. Any other burst takes rte_pktmbuf_free_bulk. */
void l3ns_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int n)
{
	struct rte_mempool *pool;
	unsigned int i;

	if (n == 0)
		return;
	pool = mbufs[0]->pool;
	for (i = 0; i < n; i++) {
		const struct rte_mbuf *m = mbufs[i];

		if (m->pool != pool || m->nb_segs != 1 || !RTE_MBUF_DIRECT(m) ||
		    rte_mbuf_refcnt_read(m) != 1) {
			rte_pktmbuf_free_bulk(mbufs, n);
			return;
		}
	}
	rte_mempool_put_bulk(pool, (void **)mbufs, n);
}

void l3ns_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

struct rte_mbuf *l3ns_pktmbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

/* Allocates `n` fresh mbufs (all or none) and reports each one's data pointer (start of the
 * data room after the headroom). Returns 0 or a negative errno (-ENOENT: pool empty). */
int l3ns_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, uint8_t **datas,
		    unsigned int n)
{
	unsigned int i;
	int ret = rte_pktmbuf_alloc_bulk(pool, mbufs, n);

	if (ret != 0)
		return ret;
	for (i = 0; i < n; i++)
		datas[i] = rte_pktmbuf_mtod(mbufs[i], uint8_t *);
	return 0;
}

/* Appends `len` bytes to an mbuf; returns the start of the appended area or NULL when the
 * last segment has no room. */
uint8_t *l3ns_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return (uint8_t *)rte_pktmbuf_append(m, len);
}

uint8_t *l3ns_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint16_t l3ns_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t l3ns_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

/* Sets each fresh single-segment mbuf's length to lens[i] and hands them to
 * rte_eth_tx_burst. Returns how many the device took (the first ones); the caller frees the
 * rest. */
uint16_t l3ns_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **mbufs,
		       const uint16_t *lens, uint16_t nb)
{
	struct l3ns_guard_slot *g;
	uint16_t i, n;

	for (i = 0; i < nb; i++) {
		struct rte_mbuf *m = mbufs[i];
		m->data_len = lens[i];
		m->pkt_len = lens[i];
	}
	g = l3ns_enter();
	n = l3ns_may_burst(port_id) ? rte_eth_tx_burst(port_id, queue_id, mbufs, nb) : 0;
	l3ns_leave(g);
	return n;
}
