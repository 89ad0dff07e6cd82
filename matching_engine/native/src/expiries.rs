//! The expiries of good-till-date orders: a binary min-heap on (expire_at, order_id) kept
//! exactly as Python's `heapq` keeps the Python core's list, entries of orders that closed
//! since included, so that a snapshot lists them in the same order whichever core took it.
//!
//! An entry names its order by slot; the slot is not reused while an entry names it
//! (`Order::expiry_pending`), so the entry's order stays readable until it is popped.
//! Order ids are unique, so (expire_at, order_id) orders entries as the Python core's
//! (expire_at, order_id, account, client_order_id) tuples do.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub expire_at: i64,
    pub order_id: u64,
    pub slot: u32,
}

impl Expiry {
    #[inline]
    fn before(&self, other: &Expiry) -> bool {
        (self.expire_at, self.order_id) < (other.expire_at, other.order_id)
    }
}

#[derive(Default)]
pub struct Expiries {
    heap: Vec<Expiry>,
}

impl Expiries {
    /// A heap laid out as `entries` are, as a restored Python list is.
    pub fn from_entries(entries: Vec<Expiry>) -> Self {
        Expiries { heap: entries }
    }

    /// The entries in heap order, the Python core's list order.
    pub fn entries(&self) -> &[Expiry] {
        &self.heap
    }

    /// When the first entry expires (None when there is none).
    #[inline]
    pub fn first_expire_at(&self) -> Option<i64> {
        self.heap.first().map(|entry| entry.expire_at)
    }

    /// `heapq.heappush`.
    pub fn push(&mut self, entry: Expiry) {
        self.heap.push(entry);
        self.sift_towards_root(0, self.heap.len() - 1);
    }

    /// `heapq.heappop`: the last entry replaces the first, then sinks.
    pub fn pop(&mut self) -> Option<Expiry> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some(last);
        }
        let first = std::mem::replace(&mut self.heap[0], last);
        self.sift_towards_leaves(0);
        Some(first)
    }

    /// heapq's `_siftdown`: move the entry at `pos` up while it sorts before its parent,
    /// no higher than `start`.
    fn sift_towards_root(&mut self, start: usize, mut pos: usize) {
        let entry = self.heap[pos];
        while pos > start {
            let parent = (pos - 1) >> 1;
            if !entry.before(&self.heap[parent]) {
                break;
            }
            self.heap[pos] = self.heap[parent];
            pos = parent;
        }
        self.heap[pos] = entry;
    }

    /// heapq's `_siftup`: move the smaller child up (the right one on a tie) until `pos`
    /// is a leaf, put the entry there, then move it back up as far as it goes.
    fn sift_towards_leaves(&mut self, mut pos: usize) {
        let (start, end, entry) = (pos, self.heap.len(), self.heap[pos]);
        let mut child = 2 * pos + 1;
        while child < end {
            if child + 1 < end && !self.heap[child].before(&self.heap[child + 1]) {
                child += 1;
            }
            self.heap[pos] = self.heap[child];
            pos = child;
            child = 2 * pos + 1;
        }
        self.heap[pos] = entry;
        self.sift_towards_root(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expire_at: i64, order_id: u64) -> Expiry {
        Expiry { expire_at, order_id, slot: order_id as u32 }
    }

    fn ids(expiries: &Expiries) -> Vec<u64> {
        expiries.entries().iter().map(|e| e.order_id).collect()
    }

    #[test]
    fn keeps_heapq_layout() {
        // heapq over the (expire_at, order_id) pairs below gives these lists, from CPython.
        let mut expiries = Expiries::default();
        for (expire_at, order_id) in [(5, 1), (3, 2), (8, 3), (1, 4), (9, 5), (2, 6), (7, 7)] {
            expiries.push(entry(expire_at, order_id));
        }
        assert_eq!(ids(&expiries), [4, 2, 6, 1, 5, 3, 7]);
        assert_eq!(expiries.pop(), Some(entry(1, 4)));
        assert_eq!(ids(&expiries), [6, 2, 7, 1, 5, 3]);
        assert_eq!(expiries.pop(), Some(entry(2, 6)));
        assert_eq!(ids(&expiries), [2, 1, 7, 3, 5]);
        assert_eq!(expiries.first_expire_at(), Some(3));
    }

    #[test]
    fn pops_in_order() {
        let mut expiries = Expiries::default();
        for order_id in 0..50u64 {
            expiries.push(entry((order_id * 37 % 11) as i64, order_id));
        }
        let mut popped = Vec::new();
        while let Some(e) = expiries.pop() {
            popped.push((e.expire_at, e.order_id));
        }
        let mut sorted = popped.clone();
        sorted.sort_unstable();
        assert_eq!(popped, sorted);
    }
}
