//! The engine's state and the primitive moves on it (matching_engine/core/state.py):
//! instruments, accounts, balances, the order slab, holds, registration and cancels.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::book::{BookSide, Order, NIL};
use crate::delivery::{Delivery, Issue};
use crate::encode::EventWriter;
use crate::expiries::Expiries;
use crate::ordered_map::OrderedMap;

pub const NEVER: i128 = 1 << 63;
pub const USDC: &[u8] = b"USDC";
pub const FEE_ACCOUNT: &[u8] = b"fees";
/// Asset ids: USDC is 0, the token of instrument `i` is `i + 1`.
pub const USDC_ASSET: u32 = 0;

/// What listing an instrument fixes: the fields of `instrument_listed`, `tick` in micro-USDC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub symbol: Box<[u8]>,
    pub gpu: Box<[u8]>,
    pub region: Box<[u8]>,
    pub delivery_start: i64,
    pub delivery_hours: i64,
    pub tick: i64,
    pub max_order_quantity: i64,
    pub maker_fee_bps: i64,
    pub taker_fee_bps: i64,
    /// v2, Delivery: micro-USDC of bond per GPU-hour; None when not deliverable.
    pub bond: Option<i64>,
}

pub struct Instrument {
    pub listing: Listing,
    /// What a limit buy holds for its fee: the higher of the two rates.
    pub hold_fee_bps: i64,
    pub closed: bool,
    pub bids: BookSide,
    pub asks: BookSide,
    /// Its issues (indexes into `Engine::issues`), oldest first.
    pub issues: Vec<u32>,
}

impl Instrument {
    pub fn new(listing: Listing, closed: bool) -> Self {
        Instrument {
            hold_fee_bps: listing.maker_fee_bps.max(listing.taker_fee_bps),
            listing,
            closed,
            bids: BookSide::new(true),
            asks: BookSide::new(false),
            issues: Vec::new(),
        }
    }

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
    /// `balance_key(account, asset)` -> [available, held], in the order first touched.
    pub balances: OrderedMap<u64, [i128; 2]>,
    pub orders: Vec<Order>,
    pub free_slots: Vec<u32>,
    pub expiries: Expiries,
    pub deposit_ids: FxHashSet<Box<[u8]>>,
    /// asset -> deposited (or issued) - withdrawn (or redeemed at close), for the
    /// conservation invariant; in the order first deposited.
    pub supply: OrderedMap<u32, i128>,
    /// Every issue accepted, in the order issued, and its index by issue id.
    pub issues: Vec<Issue>,
    pub issue_ids: FxHashMap<Box<[u8]>, u32>,
    /// Every assignment made at a close, in the order assigned, and its index by
    /// (issue index, holder account).
    pub deliveries: Vec<Delivery>,
    pub delivery_ids: FxHashMap<(u32, u32), u32>,
    pub next_close_ns: i128,
    pub fee_account: u32,
    pub events: EventWriter,
}

#[inline]
pub fn balance_key(account: u32, asset: u32) -> u64 {
    (u64::from(account) << 32) | u64::from(asset)
}

/// The (account, asset) of a `balance_key`.
#[inline]
pub fn balance_parts(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
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

    /// The [available, held] pair of an account's asset, made at zero on first use.
    #[inline]
    pub fn wallet(&mut self, account: u32, asset: u32) -> &mut [i128; 2] {
        self.balances.entry(balance_key(account, asset))
    }

    #[inline]
    pub fn available(&self, account: u32, asset: u32) -> i128 {
        self.balances.get(balance_key(account, asset)).map_or(0, |pair| pair[0])
    }

    /// The asset id of an asset name: USDC or a listed instrument's symbol (open or closed).
    pub fn asset_id(&self, name: &[u8]) -> Option<u32> {
        if name == USDC {
            return Some(USDC_ASSET);
        }
        self.instrument_ids.get(name).map(|&index| index + 1)
    }

    /// The name of an asset id.
    pub fn asset_name(&self, asset: u32) -> &[u8] {
        if asset == USDC_ASSET {
            USDC
        } else {
            &self.instruments[(asset - 1) as usize].listing.symbol
        }
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

    /// Set the order's hold to what it requires now.
    #[inline]
    pub fn refresh_hold(&mut self, slot: u32) {
        let hold = self.required_hold(slot);
        self.set_hold(slot, hold);
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

    /// Finish an order: off the book, hold released, no longer open; its slot is free again
    /// once no expiry entry names it.
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
        let order = &mut self.orders[slot as usize];
        order.open = false;
        if !order.expiry_pending {
            self.free_slots.push(slot);
        }
    }

    pub fn cancel(&mut self, slot: u32, reason: &str) {
        let remaining = self.orders[slot as usize].remaining();
        let w = self.begin_order_event("order_canceled", slot);
        w.plain("reason", reason.as_bytes());
        w.int("canceled_quantity", i128::from(remaining));
        w.end();
        self.close(slot);
    }

    /// Begin the next event, about an order: its account, client order id, order id and
    /// instrument; the caller writes the rest.
    pub fn begin_order_event(&mut self, event_type: &str, slot: u32) -> &mut EventWriter {
        let seq = self.next_seq();
        let order = &self.orders[slot as usize];
        let w = &mut self.events;
        w.begin(event_type, seq, self.time);
        w.plain("account", &self.accounts[order.account as usize].name);
        w.plain("client_order_id", &order.client_order_id);
        w.id("order_id", order.order_id);
        w.plain("instrument", &self.instruments[order.instrument as usize].listing.symbol);
        w
    }
}
