//! The HNSW graph (Malkov & Yashunin, 2018), laid out flat for cache-friendly search.
//!
//! # Layout
//! - `records`: one fixed-size record per node, in whole 64-byte cache lines: the node's vector
//!   (padded to a line), then its layer-0 list, `1 + 2m` slots (the link count, then the links),
//!   padded to a line. The list sits right behind the vector on purpose: a search reads a
//!   node's vector (its distance) before it ever reads the node's list (expanding it), and the
//!   hardware prefetcher that follows the vector's ascending lines brings the list along, so
//!   expanding a node rarely waits for memory. hnswlib interleaves the same way; with vectors
//!   and lists in two arrays, every expansion was a cache miss of its own (1M × 128: 0.57× of
//!   hnswlib's queries per second, ARCHITECTURE.md has the numbers).
//! - `upper`: the lists of layers 1.. for the few nodes that have them (a fraction `1/m` of
//!   nodes reach layer 1), `1 + m` slots each; node `i`'s layer-`l` list is list number
//!   `upper_start[i] + l - 1`. `upper_start` is the prefix sum of the levels, so nothing about
//!   it needs storing.
//!
//! A search touches one contiguous record per visited node, with no pointer to chase; the
//! visited set is an epoch-tagged array that is reused between searches (no clearing, no
//! hashing).
//!
//! # Concurrency
//! Lists are `AtomicU32`s. Writers (inserting a node, rewiring a neighbour's list) hold that
//! node's mutex; readers do not lock: a relaxed atomic load is a plain load on x86-64 and
//! AArch64, so a search over a finished graph costs the same as over `u32`s, and a search that
//! runs during a concurrent insert reads either the old or the new value of each slot. Every
//! value ever written is a valid node number and counts are clamped to the list's capacity, so a
//! torn read can cost recall for that one search, never memory safety. This is hnswlib's
//! algorithm (same neighbour heuristic, same `M`/`2M` caps, a global lock only when a node
//! raises the top level) with lock-free readers instead of its per-node read locks. One order matters for
//! correctness under concurrency: a new node writes all of its own lists before any link back
//! to it exists (see `insert`).

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;

use crate::dist::dot;

/// The highest level a node may get. With `m = 16` a node reaches level 16 with probability
/// `16^-16`; the cap only bounds the memory a crafted level could claim.
pub(crate) const MAX_LEVEL: u8 = 16;

/// A node and its distance (`1 - dot`) to the point being searched for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub d: f32,
    pub id: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// Per-search working memory, pooled so that searches allocate nothing once warm.
struct Scratch {
    /// `tags[node] == epoch` means visited in the current search.
    tags: Vec<u16>,
    epoch: u16,
    candidates: BinaryHeap<Reverse<Cand>>,
    results: BinaryHeap<Cand>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            tags: Vec::new(),
            epoch: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
        }
    }

    /// Starts a new search over `n` nodes: everything counts as unvisited.
    fn reset(&mut self, n: usize) {
        if self.tags.len() < n {
            self.tags.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.tags.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `node` visited; false if it already was.
    #[inline]
    fn visit(&mut self, node: u32) -> bool {
        let tag = &mut self.tags[node as usize];
        if *tag == self.epoch {
            return false;
        }
        *tag = self.epoch;
        true
    }
}

/// Words (`u32`/`f32`) per cache line.
const LINE_WORDS: usize = 16;

/// One cache line of a node record (see the module docs). `repr(C)` over an array of
/// `AtomicU32`s: 64 bytes, no padding, aligned to 64.
#[repr(C, align(64))]
struct Line([AtomicU32; LINE_WORDS]);

impl Line {
    fn zero() -> Self {
        Line(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

/// The graph proper: vectors, levels and links, addressed by node number (row).
pub(crate) struct Graph {
    pub dim: usize,
    /// Link cap on layers ≥ 1 (layer 0 gets `2m`), and the number of links a new node makes.
    pub m: usize,
    pub ef_construction: usize,
    /// `record_lines` lines per node: the vector in the first `vector_lines`, then the layer-0
    /// list. Vector words are written only through `&mut self` (`append`, `set_vector`), list
    /// words through atomics.
    records: Vec<Line>,
    vector_lines: usize,
    record_lines: usize,
    pub levels: Vec<u8>,
    pub upper_start: Vec<u32>,
    pub upper: Vec<AtomicU32>,
    /// Entry point and top level; `None` while the graph is empty.
    pub entry: Mutex<Option<(u32, u8)>>,
    locks: Vec<Mutex<()>>,
    pool: Mutex<Vec<Scratch>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a node lock leaves that node's list as valid as any other state
    // (every slot is a node number); carry on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn atomics(n: usize) -> Vec<AtomicU32> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl Graph {
    /// An empty graph (no node inserted yet).
    pub fn new(dim: usize, m: usize, ef_construction: usize) -> Self {
        let vector_lines = dim.div_ceil(LINE_WORDS);
        let list_lines = (2 * m + 1).div_ceil(LINE_WORDS);
        Graph {
            dim,
            m,
            ef_construction,
            records: Vec::new(),
            vector_lines,
            record_lines: vector_lines + list_lines,
            levels: Vec::new(),
            upper_start: Vec::new(),
            upper: Vec::new(),
            entry: Mutex::new(None),
            locks: Vec::new(),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Slots per layer-0 list.
    #[inline]
    pub fn slots0(&self) -> usize {
        2 * self.m + 1
    }

    /// Slots per upper-layer list.
    #[inline]
    pub fn slots_upper(&self) -> usize {
        self.m + 1
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Appends nodes (vectors and levels) without linking them; [`Graph::insert_from`] links
    /// them.
    pub fn append(&mut self, vectors: &[f32], levels: &[u8]) {
        debug_assert_eq!(vectors.len(), levels.len() * self.dim);
        let first = self.len();
        self.add_rows(levels);
        for (i, v) in vectors.chunks_exact(self.dim).enumerate() {
            self.set_vector(first + i, v);
        }
    }

    /// Appends nodes with these levels: vectors zero, lists empty.
    pub fn add_rows(&mut self, levels: &[u8]) {
        let lists = self.upper.len() / self.slots_upper();
        let next = self.push_upper_starts(lists, levels);
        self.levels.extend_from_slice(levels);
        self.records.reserve_exact(levels.len() * self.record_lines);
        self.records.extend((0..levels.len() * self.record_lines).map(|_| Line::zero()));
        let upper_len = next * self.slots_upper();
        self.upper.extend(atomics(upper_len - self.upper.len()));
        self.locks.extend((0..levels.len()).map(|_| Mutex::new(())));
    }

    /// Node `node`'s whole record as words.
    #[inline]
    fn record(&self, node: u32) -> &[AtomicU32] {
        let lines = &self.records[node as usize * self.record_lines..][..self.record_lines];
        // SAFETY: `Line` is `repr(C)` around `[AtomicU32; LINE_WORDS]`, so `lines` is
        // `lines.len() * LINE_WORDS` consecutive, initialised `AtomicU32`s, borrowed as long as
        // `lines` is.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * LINE_WORDS) }
    }

    /// Writes node `node`'s vector.
    pub fn set_vector(&mut self, node: usize, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        let lines = &mut self.records[node * self.record_lines..][..self.vector_lines];
        for (w, x) in lines.iter_mut().flat_map(|l| l.0.iter_mut()).zip(v) {
            *w.get_mut() = x.to_bits();
        }
    }

    /// Appends the `upper_start` of nodes with these levels, the first list number being
    /// `next`; returns the list number after theirs.
    fn push_upper_starts(&mut self, mut next: usize, levels: &[u8]) -> usize {
        for &l in levels {
            self.upper_start.push(next as u32);
            next += l as usize;
        }
        next
    }

    /// Sets the upper-layer lists and the entry point of a graph whose rows were added with
    /// [`Graph::add_rows`] (the loader's last step).
    pub fn finish_load(&mut self, upper: Vec<AtomicU32>, entry: Option<(u32, u8)>) {
        debug_assert_eq!(upper.len(), self.upper.len());
        self.upper = upper;
        *lock(&self.entry) = entry;
    }

    #[inline]
    pub fn vector(&self, node: u32) -> &[f32] {
        let words = &self.record(node)[..self.dim];
        // SAFETY: `AtomicU32` has the size and alignment of `f32`, and the vector words of a
        // record are written only through `&mut self` (`set_vector`), never while this shared
        // borrow of `self` exists, so reading them as plain `f32`s races with nothing.
        unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), self.dim) }
    }

    #[inline]
    fn dist(&self, q: &[f32], node: u32) -> f32 {
        1.0 - dot(q, self.vector(node))
    }

    /// Node `node`'s list on `layer` (count slot first). `layer` must be ≤ the node's level.
    #[inline]
    pub fn list(&self, node: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            &self.record(node)[self.vector_lines * LINE_WORDS..][..self.slots0()]
        } else {
            let s = (self.upper_start[node as usize] as usize + layer - 1) * self.slots_upper();
            &self.upper[s..s + self.slots_upper()]
        }
    }

    /// The links in a list, count clamped to its capacity (see the module docs on torn reads).
    #[inline]
    fn links(list: &[AtomicU32]) -> impl Iterator<Item = u32> + '_ {
        let count = (list[0].load(Relaxed) as usize).min(list.len() - 1);
        list[1..=count].iter().map(|a| a.load(Relaxed))
    }

    fn write_list(list: &[AtomicU32], links: impl Iterator<Item = u32>) {
        let mut c = 0;
        for (slot, id) in list[1..].iter().zip(links) {
            slot.store(id, Relaxed);
            c += 1;
        }
        list[0].store(c, Relaxed);
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.records.as_ptr().wrapping_add(node as usize * self.record_lines);
            // Every cache line of the vector, not just the first.
            for line in 0..self.vector_lines {
                // SAFETY: a prefetch is a hint: it never faults, whatever the address, and
                // reads nothing into the program. SSE is part of the x86-64 baseline.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = node;
    }

    fn take_scratch(&self) -> Scratch {
        lock(&self.pool).pop().unwrap_or_else(Scratch::new)
    }

    fn give_scratch(&self, s: Scratch) {
        lock(&self.pool).push(s);
    }

    /// Walks `layer` greedily towards `q` from `ep`.
    fn greedy(&self, q: &[f32], mut ep: Cand, layer: usize) -> Cand {
        loop {
            let mut moved = false;
            for n in Self::links(self.list(ep.id, layer)) {
                let d = self.dist(q, n);
                if d < ep.d {
                    ep = Cand { d, id: n };
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Descends from the entry point to layer `down_to + 1` greedily; `None` on an empty graph.
    fn descend(&self, q: &[f32], down_to: usize) -> Option<(Cand, usize)> {
        let (node, top) = (*lock(&self.entry))?;
        let mut ep = Cand { d: self.dist(q, node), id: node };
        for layer in (down_to + 1..=top as usize).rev() {
            ep = self.greedy(q, ep, layer);
        }
        Some((ep, top as usize))
    }

    /// Beam search of width `ef` on `layer` from `ep`; leaves the `ef` best nodes that `skip`
    /// does not reject in `s.results`. Rejected nodes are still walked through.
    fn search_layer(
        &self,
        q: &[f32],
        ep: Cand,
        ef: usize,
        layer: usize,
        s: &mut Scratch,
        skip: Option<&[bool]>,
    ) {
        s.reset(self.len());
        s.visit(ep.id);
        let skipped = |n: u32| skip.is_some_and(|d| d[n as usize]);
        let mut bound = f32::INFINITY;
        if !skipped(ep.id) {
            s.results.push(ep);
            bound = ep.d;
        }
        s.candidates.push(Reverse(ep));
        while let Some(Reverse(c)) = s.candidates.pop() {
            if c.d > bound && s.results.len() >= ef {
                break;
            }
            // Unvisited neighbours first, their vectors prefetched, then the distances: the
            // loads of all of them are in flight while the first distances are computed.
            let mut fresh = [0u32; 512];
            let mut count = 0;
            for n in Self::links(self.list(c.id, layer)) {
                if s.visit(n) {
                    self.prefetch(n);
                    fresh[count] = n;
                    count += 1;
                }
            }
            for &n in &fresh[..count] {
                let d = self.dist(q, n);
                if s.results.len() < ef || d < bound {
                    let cand = Cand { d, id: n };
                    s.candidates.push(Reverse(cand));
                    if !skipped(n) {
                        s.results.push(cand);
                        if s.results.len() > ef {
                            s.results.pop();
                        }
                        bound = s.results.peek().map_or(f32::INFINITY, |w| w.d);
                    }
                }
            }
        }
    }

    /// The `k` nearest nodes to `q` (best first) that `skip` does not reject.
    pub fn search(&self, q: &[f32], k: usize, ef: usize, skip: Option<&[bool]>) -> Vec<Cand> {
        let Some((ep, _)) = self.descend(q, 0) else { return Vec::new() };
        let mut s = self.take_scratch();
        self.search_layer(q, ep, ef.max(k), 0, &mut s, skip);
        let mut found = std::mem::take(&mut s.results).into_sorted_vec();
        self.give_scratch(s);
        found.truncate(k);
        found
    }

    /// hnswlib's neighbour heuristic: walks `sorted` (ascending distance to the base point) and
    /// keeps a candidate only if it is closer to the base than to every candidate kept so far,
    /// up to `limit`. Spreads the links over directions instead of one tight cluster.
    fn select(&self, sorted: &[Cand], limit: usize) -> Vec<Cand> {
        if sorted.len() <= limit {
            return sorted.to_vec();
        }
        let mut kept: Vec<Cand> = Vec::with_capacity(limit);
        for &c in sorted {
            if kept.len() >= limit {
                break;
            }
            let v = self.vector(c.id);
            if kept.iter().all(|k| self.dist(v, k.id) >= c.d) {
                kept.push(c);
            }
        }
        kept
    }

    /// Links each of `chosen` back to `node` on `layer`, re-pruning a full list with the
    /// heuristic.
    fn connect(&self, node: u32, layer: usize, chosen: &[Cand]) {
        let cap = if layer == 0 { 2 * self.m } else { self.m };
        for c in chosen {
            let _g = lock(&self.locks[c.id as usize]);
            let list = self.list(c.id, layer);
            let count = (list[0].load(Relaxed) as usize).min(cap);
            if Self::links(list).any(|l| l == node) {
                continue;
            }
            if count < cap {
                list[1 + count].store(node, Relaxed);
                list[0].store(count as u32 + 1, Relaxed);
                continue;
            }
            let base = self.vector(c.id);
            let mut cands: Vec<Cand> = Self::links(list)
                .map(|l| Cand { d: self.dist(base, l), id: l })
                .chain(std::iter::once(Cand { d: c.d, id: node }))
                .collect();
            cands.sort_unstable();
            let kept = self.select(&cands, cap);
            Self::write_list(list, kept.iter().map(|k| k.id));
        }
    }

    /// Links node `node` (already appended) into the graph.
    fn insert(&self, node: u32, s: &mut Scratch) {
        let level = self.levels[node as usize];
        let mut entry = lock(&self.entry);
        let Some((ep_node, top)) = *entry else {
            *entry = Some((node, level));
            return;
        };
        // Raising the top level: hold the entry lock for the whole insert (hnswlib does the
        // same), so that no other insert starts from an entry point whose top lists are empty.
        let raise = if level > top {
            Some(entry)
        } else {
            drop(entry);
            None
        };
        let q = self.vector(node);
        let mut ep = Cand { d: self.dist(q, ep_node), id: ep_node };
        for layer in (level as usize + 1..=top as usize).rev() {
            ep = self.greedy(q, ep, layer);
        }
        // All of the node's own lists first, and only then the links back to it: until the
        // first link back exists nobody can reach the node, so nobody appends to its lists
        // before they are written (which the write would undo), and nobody starts a search
        // from a node whose lower lists are still empty (and links only to it, unreachable).
        let mut chosen_by_layer = Vec::with_capacity(level as usize + 1);
        for layer in (0..=level.min(top) as usize).rev() {
            self.search_layer(q, ep, self.ef_construction, layer, s, None);
            let mut found: Vec<Cand> = s.results.drain().filter(|c| c.id != node).collect();
            found.sort_unstable();
            if let Some(&best) = found.first() {
                ep = best;
            }
            let chosen = self.select(&found, self.m);
            {
                let _g = lock(&self.locks[node as usize]);
                Self::write_list(self.list(node, layer), chosen.iter().map(|c| c.id));
            }
            chosen_by_layer.push((layer, chosen));
        }
        for (layer, chosen) in &chosen_by_layer {
            self.connect(node, *layer, chosen);
        }
        if let Some(mut e) = raise {
            *e = Some((node, level));
        }
    }

    /// Links nodes `start..self.len()` (appended before), on all rayon threads, in roughly
    /// ascending order (each thread takes the next node from a shared counter).
    pub fn insert_from(&self, start: usize) {
        let end = self.len();
        if start >= end {
            return;
        }
        let mut first = start;
        if lock(&self.entry).is_none() {
            let mut s = self.take_scratch();
            self.insert(start as u32, &mut s);
            self.give_scratch(s);
            first += 1;
        }
        let next = AtomicUsize::new(first);
        let workers = rayon::current_num_threads().min(end - first).max(1);
        (0..workers).into_par_iter().for_each(|_| {
            let mut s = self.take_scratch();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= end {
                    break;
                }
                self.insert(i as u32, &mut s);
            }
            self.give_scratch(s);
        });
    }
}
