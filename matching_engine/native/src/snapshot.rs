//! The engine snapshot format of matching_engine/core/snapshot.py, which defines it (the
//! `EngineSnapshot` Struct in MessagePack, as msgspec writes and reads it).
//!
//! `encode` writes what the Python core's `encode_snapshot` writes for the same state,
//! byte for byte: structs as maps of their fields in declaration order (`OrderState`,
//! `array_like`, as an array), tuples as arrays, dicts as maps in their order, every
//! header and integer in its shortest form. `decode` reads what `decode_snapshot` reads
//! (fields in any order, unknown ones skipped, integers of any width) and refuses anything
//! else with the path of the field and what is wrong with it. The state itself comes from
//! and goes to an engine in `capture.rs`.

use std::fmt;

use rustc_hash::FxHashSet;

use crate::command::{Stp, TimeInForce};
use crate::msgpack::{Fault, Reader, Writer};
use crate::state::Listing;

/// The version written. Version 1 (before Delivery) is read too: it has no issue, no
/// delivery and no deliverable instrument.
pub const SNAPSHOT_VERSION: u64 = 2;

/// An open order, as it rests on its book.
#[derive(Debug, PartialEq, Eq)]
pub struct OrderState {
    pub order_id: u64,
    pub account: Box<[u8]>,
    pub client_order_id: Box<[u8]>,
    pub is_buy: bool,
    pub price: i64,
    pub quantity: i64,
    pub filled: i64,
    pub time_in_force: TimeInForce,
    pub expire_at: Option<i64>,
    pub post_only: bool,
    pub stp: Stp,
}

/// An instrument and its book, each side in priority order (its bond per GPU-hour is
/// `listing.bond`).
#[derive(Debug, PartialEq, Eq)]
pub struct InstrumentState {
    pub listing: Listing,
    pub closed: bool,
    pub bids: Vec<OrderState>,
    pub asks: Vec<OrderState>,
}

/// An entry of the expiry heap; its order may have closed since.
#[derive(Debug, PartialEq, Eq)]
pub struct ExpiryState {
    pub expire_at: i64,
    pub order_id: u64,
    pub account: Box<[u8]>,
    pub client_order_id: Box<[u8]>,
}

/// An issue of capacity: GPU-hours as issued, not yet released nor assigned at close, and
/// still under bond.
#[derive(Debug, PartialEq, Eq)]
pub struct IssueState {
    pub issue_id: Box<[u8]>,
    pub account: Box<[u8]>,
    pub instrument: Box<[u8]>,
    pub node_id: Box<[u8]>,
    pub quantity: i64,
    pub unassigned: i64,
    pub bonded: i64,
}

/// An assignment made at close, and whether a report has settled it.
#[derive(Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub issue_id: Box<[u8]>,
    pub holder: Box<[u8]>,
    pub quantity: i64,
    pub reported: bool,
}

/// Account -> asset -> [available, held], both in the order they were first credited.
pub type Balances = Vec<(Box<[u8]>, Vec<(Box<[u8]>, [i128; 2])>)>;

/// The whole engine state: `EngineSnapshot` but for its version.
#[derive(Debug, PartialEq, Eq)]
pub struct EngineState {
    pub time: i64,
    pub seq: u64,
    pub order_counter: u64,
    pub trade_counter: u64,
    pub instruments: Vec<InstrumentState>,
    pub balances: Balances,
    /// In heap order.
    pub expiries: Vec<ExpiryState>,
    /// Sorted.
    pub deposit_ids: Vec<Box<[u8]>>,
    /// Asset -> deposited (or issued) - withdrawn (or redeemed), in the order first deposited.
    pub supply: Vec<(Box<[u8]>, i128)>,
    /// In the order issued.
    pub issues: Vec<IssueState>,
    /// In the order assigned.
    pub deliveries: Vec<DeliveryState>,
}

// -- writing -------------------------------------------------------------------------------

/// The snapshot of `state`; Err names an amount beyond what the format holds (2^64 - 1).
pub fn encode(state: &EngineState) -> Result<Vec<u8>, String> {
    let mut w = Writer::default();
    w.map(12);
    w.str(b"version");
    w.uint(SNAPSHOT_VERSION);
    w.str(b"time");
    w.int(state.time);
    w.str(b"seq");
    w.uint(state.seq);
    w.str(b"order_counter");
    w.uint(state.order_counter);
    w.str(b"trade_counter");
    w.uint(state.trade_counter);
    w.str(b"instruments");
    w.array(state.instruments.len());
    for instrument in &state.instruments {
        write_instrument(&mut w, instrument);
    }
    w.str(b"balances");
    w.map(state.balances.len());
    for (account, assets) in &state.balances {
        w.str(account);
        w.map(assets.len());
        for (asset, pair) in assets {
            w.str(asset);
            w.array(2);
            for amount in pair {
                w.wide(*amount).map_err(|fault| {
                    format!("snapshot balances[{:?}][{:?}]: {fault}", shown(account), shown(asset))
                })?;
            }
        }
    }
    w.str(b"expiries");
    w.array(state.expiries.len());
    for expiry in &state.expiries {
        w.array(4);
        w.int(expiry.expire_at);
        w.uint(expiry.order_id);
        w.str(&expiry.account);
        w.str(&expiry.client_order_id);
    }
    w.str(b"deposit_ids");
    w.array(state.deposit_ids.len());
    for id in &state.deposit_ids {
        w.str(id);
    }
    w.str(b"supply");
    w.map(state.supply.len());
    for (asset, amount) in &state.supply {
        w.str(asset);
        w.wide(*amount).map_err(|fault| format!("snapshot supply[{:?}]: {fault}", shown(asset)))?;
    }
    w.str(b"issues");
    w.array(state.issues.len());
    for issue in &state.issues {
        w.array(7);
        w.str(&issue.issue_id);
        w.str(&issue.account);
        w.str(&issue.instrument);
        w.str(&issue.node_id);
        w.int(issue.quantity);
        w.int(issue.unassigned);
        w.int(issue.bonded);
    }
    w.str(b"deliveries");
    w.array(state.deliveries.len());
    for delivery in &state.deliveries {
        w.array(4);
        w.str(&delivery.issue_id);
        w.str(&delivery.holder);
        w.int(delivery.quantity);
        w.bool(delivery.reported);
    }
    Ok(w.out)
}

fn write_instrument(w: &mut Writer, instrument: &InstrumentState) {
    let listing = &instrument.listing;
    w.map(13);
    w.str(b"symbol");
    w.str(&listing.symbol);
    w.str(b"gpu");
    w.str(&listing.gpu);
    w.str(b"region");
    w.str(&listing.region);
    for (name, value) in [
        (&b"delivery_start"[..], listing.delivery_start),
        (b"delivery_hours", listing.delivery_hours),
        (b"tick", listing.tick),
        (b"max_order_quantity", listing.max_order_quantity),
        (b"maker_fee_bps", listing.maker_fee_bps),
        (b"taker_fee_bps", listing.taker_fee_bps),
    ] {
        w.str(name);
        w.int(value);
    }
    w.str(b"closed");
    w.bool(instrument.closed);
    for (name, orders) in [(&b"bids"[..], &instrument.bids), (b"asks", &instrument.asks)] {
        w.str(name);
        w.array(orders.len());
        for order in orders {
            write_order(w, order);
        }
    }
    w.str(b"bond");
    match listing.bond {
        Some(bond) => w.int(bond),
        None => w.nil(),
    }
}

fn write_order(w: &mut Writer, order: &OrderState) {
    w.array(11);
    w.uint(order.order_id);
    w.str(&order.account);
    w.str(&order.client_order_id);
    w.bool(order.is_buy);
    w.int(order.price);
    w.int(order.quantity);
    w.int(order.filled);
    w.str(order.time_in_force.as_str().as_bytes());
    match order.expire_at {
        Some(expire_at) => w.int(expire_at),
        None => w.nil(),
    }
    w.bool(order.post_only);
    w.str(order.stp.as_str().as_bytes());
}

/// A name for a message (names are UTF-8: decoded from JSON or from a snapshot).
pub(crate) fn shown(name: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(name)
}

// -- reading -------------------------------------------------------------------------------

/// The state a snapshot holds; Err says which field is wrong and how.
pub fn decode(data: &[u8]) -> Result<EngineState, String> {
    let mut reader = Reader::new(data);
    let state = engine_state(&mut reader).and_then(|state| {
        reader.finish()?;
        Ok(state)
    });
    state.map_err(|flaw| flaw.to_string())
}

/// A fault and where: `path` names the field, outermost first ("" for the whole snapshot).
struct Flaw {
    path: String,
    fault: Fault,
}

impl From<Fault> for Flaw {
    fn from(fault: Fault) -> Self {
        Flaw { path: String::new(), fault }
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_str() {
            "" => write!(f, "snapshot: {}", self.fault),
            path => write!(f, "snapshot {path}: {}", self.fault),
        }
    }
}

type Read<T> = Result<T, Flaw>;

/// `read`, a flaw in it placed under `step` (a field name, or `[index]`).
fn at<T, E: Into<Flaw>>(step: impl fmt::Display, read: Result<T, E>) -> Read<T> {
    read.map_err(|error| {
        let mut flaw = error.into();
        let dot = if flaw.path.is_empty() || flaw.path.starts_with('[') { "" } else { "." };
        flaw.path = format!("{step}{dot}{}", flaw.path);
        flaw
    })
}

fn required<T>(name: &str, value: Option<T>) -> Read<T> {
    value.ok_or_else(|| format!("the field {name} is missing").into())
}

/// A struct written as a map of its fields: `field` reads the value of each name it knows
/// and returns false for a name it does not, whose value is skipped (as msgspec skips it).
fn fields<'a>(
    r: &mut Reader<'a>,
    mut field: impl FnMut(&str, &mut Reader<'a>) -> Read<bool>,
) -> Read<()> {
    for _ in 0..r.map()? {
        let name = r.str()?;
        if !at(name, field(name, r))? {
            r.skip()?;
        }
    }
    Ok(())
}

fn list<'a, T>(
    r: &mut Reader<'a>,
    mut item: impl FnMut(&mut Reader<'a>) -> Read<T>,
) -> Read<Vec<T>> {
    let len = r.array()?;
    (0..len).map(|index| at(format_args!("[{index}]"), item(r))).collect()
}

/// A dict keyed by name, in its order; a name twice is refused.
fn dict<'a, T>(
    r: &mut Reader<'a>,
    mut value: impl FnMut(&mut Reader<'a>) -> Read<T>,
) -> Read<Vec<(Box<[u8]>, T)>> {
    let len = r.map()?;
    let mut names = FxHashSet::default();
    let mut entries = Vec::with_capacity(len);
    for _ in 0..len {
        let name = r.str()?;
        if !names.insert(name) {
            return Err(format!("the key {name:?} twice").into());
        }
        entries.push((name.as_bytes().into(), at(format_args!("[{name:?}]"), value(r))?));
    }
    Ok(entries)
}

fn text(r: &mut Reader<'_>) -> Result<Box<[u8]>, Fault> {
    Ok(r.str()?.as_bytes().into())
}

fn named<T>(r: &mut Reader<'_>, of: fn(&[u8]) -> Option<T>) -> Result<T, Fault> {
    let name = r.str()?;
    of(name.as_bytes()).ok_or_else(|| format!("unknown name {name:?}"))
}

fn engine_state(r: &mut Reader<'_>) -> Read<EngineState> {
    let mut version = None;
    let (mut time, mut seq, mut order_counter, mut trade_counter) = (None, None, None, None);
    let (mut instruments, mut balances, mut expiries) = (None, None, None);
    let (mut deposit_ids, mut supply) = (None, None);
    let (mut issues, mut deliveries) = (Vec::new(), Vec::new());
    fields(r, |name, r| {
        match name {
            "version" => {
                let found: u64 = r.int_in()?;
                if !(1..=SNAPSHOT_VERSION).contains(&found) {
                    let fault = format!("{found}, where this engine reads 1 to {SNAPSHOT_VERSION}");
                    return Err(fault.into());
                }
                version = Some(found);
            }
            "time" => time = Some(r.int_in()?),
            "seq" => seq = Some(r.int_in()?),
            "order_counter" => order_counter = Some(r.int_in()?),
            "trade_counter" => trade_counter = Some(r.int_in()?),
            "instruments" => instruments = Some(list(r, instrument_state)?),
            "balances" => balances = Some(dict(r, |r| dict(r, pair))?),
            "expiries" => expiries = Some(list(r, expiry_state)?),
            "deposit_ids" => deposit_ids = Some(list(r, |r| Ok(text(r)?))?),
            "supply" => supply = Some(dict(r, |r| Ok(r.int()?))?),
            "issues" => issues = list(r, issue_state)?,
            "deliveries" => deliveries = list(r, delivery_state)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    required("version", version)?;
    Ok(EngineState {
        time: required("time", time)?,
        seq: required("seq", seq)?,
        order_counter: required("order_counter", order_counter)?,
        trade_counter: required("trade_counter", trade_counter)?,
        instruments: required("instruments", instruments)?,
        balances: required("balances", balances)?,
        expiries: required("expiries", expiries)?,
        deposit_ids: required("deposit_ids", deposit_ids)?,
        supply: required("supply", supply)?,
        issues,
        deliveries,
    })
}

fn instrument_state(r: &mut Reader<'_>) -> Read<InstrumentState> {
    let (mut symbol, mut gpu, mut region) = (None, None, None);
    let (mut delivery_start, mut delivery_hours, mut tick) = (None, None, None);
    let (mut max_order_quantity, mut maker_fee_bps, mut taker_fee_bps) = (None, None, None);
    let (mut closed, mut bids, mut asks, mut bond) = (None, None, None, None);
    fields(r, |name, r| {
        match name {
            "symbol" => symbol = Some(text(r)?),
            "gpu" => gpu = Some(text(r)?),
            "region" => region = Some(text(r)?),
            "delivery_start" => delivery_start = Some(r.int_in()?),
            "delivery_hours" => delivery_hours = Some(r.int_in()?),
            "tick" => tick = Some(r.int_in()?),
            "max_order_quantity" => max_order_quantity = Some(r.int_in()?),
            "maker_fee_bps" => maker_fee_bps = Some(r.int_in()?),
            "taker_fee_bps" => taker_fee_bps = Some(r.int_in()?),
            "closed" => closed = Some(r.bool()?),
            "bids" => bids = Some(list(r, order_state)?),
            "asks" => asks = Some(list(r, order_state)?),
            "bond" => bond = r.opt_int_in()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(InstrumentState {
        listing: Listing {
            symbol: required("symbol", symbol)?,
            gpu: required("gpu", gpu)?,
            region: required("region", region)?,
            delivery_start: required("delivery_start", delivery_start)?,
            delivery_hours: required("delivery_hours", delivery_hours)?,
            tick: required("tick", tick)?,
            max_order_quantity: required("max_order_quantity", max_order_quantity)?,
            maker_fee_bps: required("maker_fee_bps", maker_fee_bps)?,
            taker_fee_bps: required("taker_fee_bps", taker_fee_bps)?,
            bond,
        },
        closed: required("closed", closed)?,
        bids: required("bids", bids)?,
        asks: required("asks", asks)?,
    })
}

/// An `OrderState`: an array of its 11 fields in order.
fn order_state(r: &mut Reader<'_>) -> Read<OrderState> {
    r.array_of(11)?;
    Ok(OrderState {
        order_id: at("order_id", r.int_in())?,
        account: at("account", text(r))?,
        client_order_id: at("client_order_id", text(r))?,
        is_buy: at("is_buy", r.bool())?,
        price: at("price", r.int_in())?,
        quantity: at("quantity", r.int_in())?,
        filled: at("filled", r.int_in())?,
        time_in_force: at("time_in_force", named(r, TimeInForce::named))?,
        expire_at: at("expire_at", r.opt_int_in())?,
        post_only: at("post_only", r.bool())?,
        stp: at("stp", named(r, Stp::named))?,
    })
}

/// (expire_at, order_id, account, client_order_id).
fn expiry_state(r: &mut Reader<'_>) -> Read<ExpiryState> {
    r.array_of(4)?;
    Ok(ExpiryState {
        expire_at: at("[0]", r.int_in())?,
        order_id: at("[1]", r.int_in())?,
        account: at("[2]", text(r))?,
        client_order_id: at("[3]", text(r))?,
    })
}

/// (issue_id, account, instrument, node_id, quantity, unassigned, bonded).
fn issue_state(r: &mut Reader<'_>) -> Read<IssueState> {
    r.array_of(7)?;
    Ok(IssueState {
        issue_id: at("issue_id", text(r))?,
        account: at("account", text(r))?,
        instrument: at("instrument", text(r))?,
        node_id: at("node_id", text(r))?,
        quantity: at("quantity", r.int_in())?,
        unassigned: at("unassigned", r.int_in())?,
        bonded: at("bonded", r.int_in())?,
    })
}

/// (issue_id, holder, quantity, reported).
fn delivery_state(r: &mut Reader<'_>) -> Read<DeliveryState> {
    r.array_of(4)?;
    Ok(DeliveryState {
        issue_id: at("issue_id", text(r))?,
        holder: at("holder", text(r))?,
        quantity: at("quantity", r.int_in())?,
        reported: at("reported", r.bool())?,
    })
}

/// (available, held).
fn pair(r: &mut Reader<'_>) -> Read<[i128; 2]> {
    r.array_of(2)?;
    Ok([at("[0]", r.int())?, at("[1]", r.int())?])
}
