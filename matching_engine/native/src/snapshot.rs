//! The whole engine state as plain data, in the layout of the Python core's snapshot
//! (matching_engine/core/snapshot.py), so that either core restores the other's snapshots
//! and, restored, goes on to the same events byte for byte.
//!
//! Books list their orders in priority order, so adding them back in that order keeps time
//! priority; accounts list their open orders in acceptance (order id) order. Expiries name
//! their order by account and client order id; only those of open orders are exported.

use std::cmp::Reverse;

use crate::book::{Order, NIL};
use crate::command::{Stp, TimeInForce};
use crate::state::{Engine, Instrument, USDC, USDC_ASSET};

pub struct OrderState {
    pub order_id: u64,
    pub account: String,
    pub client_order_id: String,
    pub is_buy: bool,
    pub price: i64,
    pub quantity: i64,
    pub filled: i64,
    pub time_in_force: String,
    pub expire_at: Option<i64>,
    pub post_only: bool,
    pub stp: String,
}

pub struct InstrumentState {
    pub symbol: String,
    pub gpu: String,
    pub region: String,
    pub delivery_start: i64,
    pub delivery_hours: i64,
    pub tick: i64,
    pub max_order_quantity: i64,
    pub maker_fee_bps: i64,
    pub taker_fee_bps: i64,
    pub closed: bool,
    pub bids: Vec<OrderState>,
    pub asks: Vec<OrderState>,
}

pub struct EngineState {
    pub time: i64,
    pub seq: u64,
    pub order_counter: u64,
    pub trade_counter: u64,
    pub instruments: Vec<InstrumentState>,
    /// (account, asset, available, held), sorted.
    pub balances: Vec<(String, String, i128, i128)>,
    /// (expire_at, order_id, account, client_order_id) of open gtd orders, sorted.
    pub expiries: Vec<(i64, u64, String, String)>,
    pub deposit_ids: Vec<String>,
    /// (asset, deposited - withdrawn), sorted.
    pub supply: Vec<(String, i128)>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("names are checked UTF-8 when decoded")
}

fn time_in_force(name: &str) -> Result<TimeInForce, String> {
    [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok, TimeInForce::Gtd]
        .into_iter()
        .find(|tif| tif.as_str() == name)
        .ok_or_else(|| format!("unknown time_in_force {name:?}"))
}

fn stp(name: &str) -> Result<Stp, String> {
    [Stp::CancelNewest, Stp::CancelOldest, Stp::CancelBoth, Stp::Decrement]
        .into_iter()
        .find(|stp| stp.as_str() == name)
        .ok_or_else(|| format!("unknown stp {name:?}"))
}

impl Engine {
    fn asset_text(&self, asset: u32) -> String {
        if asset == USDC_ASSET {
            text(USDC)
        } else {
            text(&self.instruments[(asset - 1) as usize].symbol)
        }
    }

    fn order_state(&self, slot: u32) -> OrderState {
        let order = &self.orders[slot as usize];
        OrderState {
            order_id: order.order_id,
            account: text(&self.accounts[order.account as usize].name),
            client_order_id: text(&order.client_order_id),
            is_buy: order.is_buy,
            price: order.price,
            quantity: order.quantity,
            filled: order.filled,
            time_in_force: order.time_in_force.as_str().to_owned(),
            expire_at: order.expire_at,
            post_only: order.post_only,
            stp: order.stp.as_str().to_owned(),
        }
    }

    /// Return the whole state as plain data.
    pub fn export_state(&self) -> EngineState {
        let instruments = self
            .instruments
            .iter()
            .map(|instrument| InstrumentState {
                symbol: text(&instrument.symbol),
                gpu: text(&instrument.gpu),
                region: text(&instrument.region),
                delivery_start: instrument.delivery_start,
                delivery_hours: instrument.delivery_hours,
                tick: instrument.tick,
                max_order_quantity: instrument.max_order_quantity,
                maker_fee_bps: instrument.maker_fee_bps,
                taker_fee_bps: instrument.taker_fee_bps,
                closed: instrument.closed,
                bids: instrument
                    .bids
                    .orders_in_priority(&self.orders)
                    .into_iter()
                    .map(|slot| self.order_state(slot))
                    .collect(),
                asks: instrument
                    .asks
                    .orders_in_priority(&self.orders)
                    .into_iter()
                    .map(|slot| self.order_state(slot))
                    .collect(),
            })
            .collect();
        let mut balances: Vec<_> = self
            .balances
            .iter()
            .map(|(&key, &[available, held])| {
                let (account, asset) = ((key >> 32) as u32, key as u32);
                (
                    text(&self.accounts[account as usize].name),
                    self.asset_text(asset),
                    available,
                    held,
                )
            })
            .collect();
        balances.sort();
        let mut expiries: Vec<_> = self
            .expiries
            .iter()
            .filter_map(|&Reverse((expire_at, order_id, slot))| {
                let order = &self.orders[slot as usize];
                (order.open && order.order_id == order_id).then(|| {
                    let account = text(&self.accounts[order.account as usize].name);
                    (expire_at, order_id, account, text(&order.client_order_id))
                })
            })
            .collect();
        expiries.sort();
        let mut deposit_ids: Vec<_> = self.deposit_ids.iter().map(|id| text(id)).collect();
        deposit_ids.sort();
        let mut supply: Vec<_> =
            self.supply.iter().map(|(&asset, &amount)| (self.asset_text(asset), amount)).collect();
        supply.sort();
        EngineState {
            time: self.time,
            seq: self.seq,
            order_counter: self.order_counter,
            trade_counter: self.trade_counter,
            instruments,
            balances,
            expiries,
            deposit_ids,
            supply,
        }
    }

    fn asset_named(&self, name: &str) -> Result<u32, String> {
        if name.as_bytes() == USDC {
            return Ok(USDC_ASSET);
        }
        self.instrument_ids
            .get(name.as_bytes())
            .map(|&index| index + 1)
            .ok_or_else(|| format!("asset {name:?} is neither USDC nor a listed instrument"))
    }

    fn add_restored_order(&mut self, instrument: u32, state: &OrderState) -> Result<u32, String> {
        let is_buy = state.is_buy;
        let account = self.account_id(state.account.as_bytes());
        let slot = self.alloc_order(Order {
            order_id: state.order_id,
            account,
            instrument,
            is_buy,
            is_market: false,
            post_only: state.post_only,
            resting: false,
            open: true,
            time_in_force: time_in_force(&state.time_in_force)?,
            stp: stp(&state.stp)?,
            price: state.price,
            quantity: state.quantity,
            filled: state.filled,
            expire_at: state.expire_at,
            hold: 0,
            prev: NIL,
            next: NIL,
            account_prev: NIL,
            account_next: NIL,
            client_order_id: state.client_order_id.as_bytes().into(),
        });
        self.instruments[instrument as usize].side_mut(is_buy).add(&mut self.orders, slot);
        Ok(slot)
    }

    /// Build an engine holding `state`, as it was when exported; refuse one that breaks an
    /// invariant, naming it.
    pub fn from_state(state: &EngineState) -> Result<Engine, String> {
        let mut engine = Engine::new();
        engine.time = state.time;
        engine.seq = state.seq;
        engine.order_counter = state.order_counter;
        engine.trade_counter = state.trade_counter;
        for (index, listed) in state.instruments.iter().enumerate() {
            let symbol: Box<[u8]> = listed.symbol.as_bytes().into();
            if engine.instrument_ids.insert(symbol.clone(), index as u32).is_some() {
                return Err(format!("instrument {:?} listed twice", listed.symbol));
            }
            engine.instruments.push(Instrument {
                symbol,
                gpu: listed.gpu.as_bytes().into(),
                region: listed.region.as_bytes().into(),
                delivery_start: listed.delivery_start,
                delivery_hours: listed.delivery_hours,
                tick: listed.tick,
                max_order_quantity: listed.max_order_quantity,
                maker_fee_bps: listed.maker_fee_bps,
                taker_fee_bps: listed.taker_fee_bps,
                hold_fee_bps: listed.maker_fee_bps.max(listed.taker_fee_bps),
                closed: listed.closed,
                bids: crate::book::BookSide::new(true),
                asks: crate::book::BookSide::new(false),
            });
        }
        for (account, asset, available, held) in &state.balances {
            let account = engine.account_id(account.as_bytes());
            let asset = engine.asset_named(asset)?;
            *engine.wallet(account, asset) = [*available, *held];
        }
        for (asset, amount) in &state.supply {
            let asset = engine.asset_named(asset)?;
            engine.supply.insert(asset, *amount);
        }
        for id in &state.deposit_ids {
            engine.deposit_ids.insert(id.as_bytes().into());
        }
        let mut restored: Vec<(u64, u32)> = Vec::new();
        for (index, listed) in state.instruments.iter().enumerate() {
            for order in listed.bids.iter().chain(&listed.asks) {
                restored.push((order.order_id, engine.add_restored_order(index as u32, order)?));
            }
        }
        restored.sort_unstable();
        for &(_, slot) in &restored {
            engine.register(slot);
            engine.orders[slot as usize].hold = engine.required_hold(slot);
        }
        for (expire_at, order_id, account, client_order_id) in &state.expiries {
            let open = engine
                .account_ids
                .get(account.as_bytes())
                .and_then(|&id| engine.accounts[id as usize].open.get(client_order_id.as_bytes()))
                .copied();
            if let Some(slot) = open {
                if engine.orders[slot as usize].order_id == *order_id {
                    engine.expiries.push(Reverse((*expire_at, *order_id, slot)));
                }
            }
        }
        engine.next_close_ns = engine.earliest_open_delivery();
        engine.validate()?;
        Ok(engine)
    }
}
