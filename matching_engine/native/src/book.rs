//! Orders, price levels and book sides (matching_engine/core/book.py), on an order slab.
//!
//! A level is a FIFO of orders linked through the slab (`prev`/`next`), so removal is
//! O(1) and the order of live orders is the Python deque's with its dead entries skipped.
//! A side keeps its levels in a Vec sorted so that the best level is the last one.

use crate::command::{Stp, TimeInForce};

pub const NIL: u32 = u32::MAX;
pub const BPS: i128 = 10_000;

pub struct Order {
    pub order_id: u64,
    pub account: u32,
    pub instrument: u32,
    pub is_buy: bool,
    pub is_market: bool,
    pub post_only: bool,
    pub resting: bool,
    pub open: bool,
    /// An expiry entry names this slot: it is not reused until the entry is popped.
    pub expiry_pending: bool,
    pub time_in_force: TimeInForce,
    pub stp: Stp,
    /// micro-USDC; 0 for a market order.
    pub price: i64,
    pub quantity: i64,
    pub filled: i64,
    pub expire_at: Option<i64>,
    pub hold: i128,
    /// Neighbours in the price level.
    pub prev: u32,
    pub next: u32,
    /// Neighbours in the account's open orders (ascending order id).
    pub account_prev: u32,
    pub account_next: u32,
    pub client_order_id: Box<[u8]>,
}

impl Default for Order {
    /// A closed gtc limit order of nothing, linked to nothing.
    fn default() -> Self {
        Order {
            order_id: 0,
            account: 0,
            instrument: 0,
            is_buy: false,
            is_market: false,
            post_only: false,
            resting: false,
            open: false,
            expiry_pending: false,
            time_in_force: TimeInForce::Gtc,
            stp: Stp::CancelNewest,
            price: 0,
            quantity: 0,
            filled: 0,
            expire_at: None,
            hold: 0,
            prev: NIL,
            next: NIL,
            account_prev: NIL,
            account_next: NIL,
            client_order_id: Box::default(),
        }
    }
}

impl Order {
    #[inline]
    pub fn remaining(&self) -> i64 {
        self.quantity - self.filled
    }
}

/// What a limit buy of `remaining` at `price` holds: notional plus the fee at `fee_bps`.
#[inline]
pub fn cost(quantity: i128, price: i128, fee_bps: i128) -> i128 {
    let notional = quantity * price;
    notional + notional * fee_bps / BPS
}

#[derive(Clone, Copy)]
pub struct Level {
    pub price: i64,
    pub head: u32,
    pub tail: u32,
    pub live: u32,
}

pub struct BookSide {
    pub is_buy: bool,
    /// Sorted worst first: ascending prices for bids, descending for asks.
    pub levels: Vec<Level>,
}

impl BookSide {
    pub fn new(is_buy: bool) -> Self {
        BookSide { is_buy, levels: Vec::new() }
    }

    #[inline]
    pub fn best_price(&self) -> Option<i64> {
        self.levels.last().map(|level| level.price)
    }

    /// Whether an order on the other side at `price` would meet this side's best.
    #[inline]
    pub fn crosses(&self, is_buy: bool, price: i64) -> bool {
        match self.best_price() {
            None => false,
            Some(best) => {
                if is_buy {
                    price >= best
                } else {
                    price <= best
                }
            }
        }
    }

    /// The index of the level at `price`, or where it would go.
    #[inline]
    fn find(&self, price: i64) -> Result<usize, usize> {
        // Search from the best end: activity clusters at the touch.
        let levels = &self.levels;
        let n = levels.len();
        let mut i = n;
        while i > 0 && n - i < 8 {
            let level_price = levels[i - 1].price;
            if level_price == price {
                return Ok(i - 1);
            }
            let better = if self.is_buy { level_price > price } else { level_price < price };
            if !better {
                return Err(i);
            }
            i -= 1;
        }
        if self.is_buy {
            levels[..i].binary_search_by(|l| l.price.cmp(&price))
        } else {
            levels[..i].binary_search_by(|l| price.cmp(&l.price))
        }
    }

    /// Append the order at the back of its price level.
    pub fn add(&mut self, orders: &mut [Order], slot: u32) {
        let price = orders[slot as usize].price;
        let index = match self.find(price) {
            Ok(index) => index,
            Err(index) => {
                self.levels.insert(index, Level { price, head: NIL, tail: NIL, live: 0 });
                index
            }
        };
        let level = &mut self.levels[index];
        let tail = level.tail;
        {
            let order = &mut orders[slot as usize];
            order.prev = tail;
            order.next = NIL;
            order.resting = true;
        }
        if tail == NIL {
            level.head = slot;
        } else {
            orders[tail as usize].next = slot;
        }
        level.tail = slot;
        level.live += 1;
    }

    /// Take a resting order off the book; its level goes when it was the last one.
    pub fn remove(&mut self, orders: &mut [Order], slot: u32) {
        let (price, prev, next) = {
            let order = &mut orders[slot as usize];
            order.resting = false;
            (order.price, order.prev, order.next)
        };
        let index = self.find(price).expect("a resting order's level exists");
        if prev == NIL {
            self.levels[index].head = next;
        } else {
            orders[prev as usize].next = next;
        }
        if next == NIL {
            self.levels[index].tail = prev;
        } else {
            orders[next as usize].prev = prev;
        }
        let level = &mut self.levels[index];
        level.live -= 1;
        if level.live == 0 {
            self.levels.remove(index);
        }
    }

    /// The resting orders in priority order (best level first, oldest first).
    pub fn orders_in_priority(&self, orders: &[Order]) -> Vec<u32> {
        let mut out = Vec::new();
        for level in self.levels.iter().rev() {
            let mut slot = level.head;
            while slot != NIL {
                out.push(slot);
                slot = orders[slot as usize].next;
            }
        }
        out
    }
}
