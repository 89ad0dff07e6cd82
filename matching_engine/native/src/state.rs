//! The engine's state and the primitive moves on it (matching_engine/core/state.py):
//! instruments, accounts, balances, the order slab, holds, registration and cancels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::book::{BookSide, Order, NIL};
use crate::encode::EventWriter;

pub const NEVER: i128 = 1 << 63;
pub const USDC: &[u8] = b"USDC";
pub const FEE_ACCOUNT: &[u8] = b"fees";
/// Asset ids: USDC is 0, the token of instrument `i` is `i + 1`.
pub const USDC_ASSET: u32 = 0;

pub struct Instrument {
    pub symbol: Box<[u8]>,
    pub gpu: Box<[u8]>,
    pub region: Box<[u8]>,
    pub delivery_start: i64,
    pub delivery_hours: i64,
    pub tick: i64,
    pub max_order_quantity: i64,
    pub maker_fee_bps: i64,
    pub taker_fee_bps: i64,
    pub hold_fee_bps: i64,
    pub closed: bool,
    pub bids: BookSide,
    pub asks: BookSide,
}

impl Instrument {
    #[inline]
    pub fn side_mut(&mut self, is_buy: bool) -> &mut BookSide {
        if is_buy {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }

    #[inline]
    pub fn opposite(&self, is_buy: bool) -> &BookSide {
        if is_buy {
            &self.asks
        } else {
            &self.bids
        }
    }
}

pub struct Account {
    pub name: Box<[u8]>,
    /// Open orders by client order id.
    pub open: FxHashMap<Box<[u8]>, u32>,
    /// Open orders in acceptance order, linked through the slab.
    pub head: u32,
    pub tail: u32,
}

#[derive(Default)]
pub struct Engine {
    pub time: i64,
    pub seq: u64,
    pub order_counter: u64,
    pub trade_counter: u64,
    pub instruments: Vec<Instrument>,
    pub instrument_ids: FxHashMap<Box<[u8]>, u32>,
    pub accounts: Vec<Account>,
    pub account_ids: FxHashMap<Box<[u8]>, u32>,
    /// (account, asset) -> [available, held]
    pub balances: FxHashMap<u64, [i128; 2]>,
    pub orders: Vec<Order>,
    pub free_slots: Vec<u32>,
    /// (expire_at, order_id, slot) of gtd orders.
    pub expiries: BinaryHeap<Reverse<(i64, u64, u32)>>,
    pub deposit_ids: FxHashSet<Box<[u8]>>,
    /// asset -> deposited - withdrawn, for the conservation invariant.
    pub supply: FxHashMap<u32, i128>,
    pub next_close_ns: i128,
    pub fee_account: u32,
    pub events: EventWriter,
}

#[inline]
fn balance_key(account: u32, asset: u32) -> u64 {
    (u64::from(account) << 32) | u64::from(asset)
}

impl Engine {
    pub fn new() -> Self {
        let mut engine = Engine {
            next_close_ns: NEVER,
            events: EventWriter { out: Vec::new() },
            ..Default::default()
        };
        engine.fee_account = engine.account_id(FEE_ACCOUNT);
        engine
    }

    // -- primitive moves -------------------------------------------------------------------

    #[inline]
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The id of an account name, made on first sight.
    pub fn account_id(&mut self, name: &[u8]) -> u32 {
        if let Some(&id) = self.account_ids.get(name) {
            return id;
        }
        let id = self.accounts.len() as u32;
        self.accounts.push(Account {
            name: name.into(),
            open: FxHashMap::default(),
            head: NIL,
            tail: NIL,
        });
        self.account_ids.insert(name.into(), id);
        id
    }

    #[inline]
    pub fn wallet(&mut self, account: u32, asset: u32) -> &mut [i128; 2] {
        self.balances.entry(balance_key(account, asset)).or_insert([0, 0])
    }

    #[inline]
    pub fn available(&self, account: u32, asset: u32) -> i128 {
        self.balances.get(&balance_key(account, asset)).map_or(0, |pair| pair[0])
    }

    #[inline]
    pub fn order_asset(&self, slot: u32) -> u32 {
        let order = &self.orders[slot as usize];
        if order.is_buy {
            USDC_ASSET
        } else {
            order.instrument + 1
        }
    }

    /// Move the difference between the order's hold and `hold` into or out of held.
    pub fn set_hold(&mut self, slot: u32, hold: i128) {
        let delta = hold - self.orders[slot as usize].hold;
        if delta != 0 {
            let asset = self.order_asset(slot);
            let account = self.orders[slot as usize].account;
            let pair = self.wallet(account, asset);
            pair[0] -= delta;
            pair[1] += delta;
            self.orders[slot as usize].hold = hold;
        }
    }

    /// `Order.required_hold`: USDC for a limit buy, tokens for a sell.
    #[inline]
    pub fn required_hold(&self, slot: u32) -> i128 {
        let order = &self.orders[slot as usize];
        let remaining = i128::from(order.remaining());
        if !order.is_buy {
            return remaining;
        }
        if order.is_market {
            return 0;
        }
        let fee_bps = self.instruments[order.instrument as usize].hold_fee_bps;
        crate::book::cost(remaining, i128::from(order.price), i128::from(fee_bps))
    }

    pub fn alloc_order(&mut self, order: Order) -> u32 {
        match self.free_slots.pop() {
            Some(slot) => {
                self.orders[slot as usize] = order;
                slot
            }
            None => {
                self.orders.push(order);
                (self.orders.len() - 1) as u32
            }
        }
    }

    /// Make an accepted order open: findable by client order id, last of its account's.
    pub fn register(&mut self, slot: u32) {
        let (account, client_order_id) = {
            let order = &self.orders[slot as usize];
            (order.account, order.client_order_id.clone())
        };
        let tail = self.accounts[account as usize].tail;
        {
            let order = &mut self.orders[slot as usize];
            order.account_prev = tail;
            order.account_next = NIL;
        }
        if tail == NIL {
            self.accounts[account as usize].head = slot;
        } else {
            self.orders[tail as usize].account_next = slot;
        }
        let entry = &mut self.accounts[account as usize];
        entry.tail = slot;
        entry.open.insert(client_order_id, slot);
    }

    /// Finish an order: off the book, hold released, no longer open.
    pub fn close(&mut self, slot: u32) {
        let (resting, instrument, is_buy, account, prev, next) = {
            let order = &self.orders[slot as usize];
            (
                order.resting,
                order.instrument,
                order.is_buy,
                order.account,
                order.account_prev,
                order.account_next,
            )
        };
        if resting {
            self.instruments[instrument as usize].side_mut(is_buy).remove(&mut self.orders, slot);
        }
        self.set_hold(slot, 0);
        let entry = &mut self.accounts[account as usize];
        entry.open.remove(&self.orders[slot as usize].client_order_id);
        if prev == NIL {
            entry.head = next;
        } else {
            self.orders[prev as usize].account_next = next;
        }
        if next == NIL {
            entry.tail = prev;
        } else {
            self.orders[next as usize].account_prev = prev;
        }
        self.orders[slot as usize].open = false;
        self.free_slots.push(slot);
    }

    pub fn cancel(&mut self, slot: u32, reason: &str) {
        let seq = self.next_seq();
        let order = &self.orders[slot as usize];
        let w = &mut self.events;
        w.begin("order_canceled", seq, self.time);
        w.plain("account", &self.accounts[order.account as usize].name);
        w.plain("client_order_id", &order.client_order_id);
        w.id("order_id", order.order_id);
        w.plain("instrument", &self.instruments[order.instrument as usize].symbol);
        w.plain("reason", reason.as_bytes());
        w.int("canceled_quantity", i128::from(order.remaining()));
        w.end();
        self.close(slot);
    }
}
