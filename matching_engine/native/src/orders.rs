//! Order entry and matching (matching_engine/core/orders.py): new, cancel, amend, mass
//! cancel; trades, fees, self-trade prevention, fok simulation, the market buy's cap.

use crate::book::{cost, Order, BPS, NIL};
use crate::decode::{CancelReason, NewOrder, OrderType, Side, Stp, TimeInForce};
use crate::engine::{Engine, USDC_ASSET};
use crate::money::parse_positive_micro;

impl Engine {
    // -- new order -------------------------------------------------------------------------

    pub fn on_new_order(&mut self, c: &NewOrder<'_>) {
        let (instrument, price) = match self.check_new_order(c) {
            Ok(ok) => ok,
            Err(reason) => {
                let seq = self.next_seq();
                let named = self.instrument_ids.contains_key(c.instrument);
                let w = &mut self.events;
                w.begin("order_rejected", seq, self.time);
                w.plain("account", c.account);
                w.plain("client_order_id", c.client_order_id);
                w.plain("reason", reason.as_bytes());
                if named {
                    w.plain("instrument", c.instrument);
                }
                return w.end();
            }
        };
        let is_market = c.order_type == OrderType::Market;
        let time_in_force =
            c.time_in_force.unwrap_or(if is_market { TimeInForce::Ioc } else { TimeInForce::Gtc });
        let account = self.account_id(c.account);
        self.order_counter += 1;
        let order_id = self.order_counter;
        let slot = self.alloc_order(Order {
            order_id,
            account,
            instrument,
            is_buy: c.side == Side::Buy,
            is_market,
            post_only: c.post_only,
            resting: false,
            open: true,
            time_in_force,
            stp: c.stp,
            price,
            quantity: c.quantity as i64,
            filled: 0,
            expire_at: c.expire_at,
            hold: 0,
            prev: NIL,
            next: NIL,
            account_prev: NIL,
            account_next: NIL,
            client_order_id: c.client_order_id.into(),
        });
        self.write_order_accepted(c, slot);
        self.register(slot);
        let hold = self.required_hold(slot);
        self.set_hold(slot, hold);
        if time_in_force == TimeInForce::Fok && !self.fills_whole(slot) {
            return self.cancel(slot, "fok");
        }
        if time_in_force == TimeInForce::Gtd {
            let expire_at = c.expire_at.expect("a well-formed gtd order has expire_at");
            self.expiries.push(std::cmp::Reverse((expire_at, order_id, slot)));
        }
        self.execute(slot);
    }

    fn write_order_accepted(&mut self, c: &NewOrder<'_>, slot: u32) {
        let seq = self.next_seq();
        let order = &self.orders[slot as usize];
        let w = &mut self.events;
        w.begin("order_accepted", seq, self.time);
        w.plain("account", c.account);
        w.plain("client_order_id", c.client_order_id);
        w.id("order_id", order.order_id);
        w.plain("instrument", c.instrument);
        w.plain("side", if order.is_buy { b"buy" } else { b"sell" });
        w.plain("order_type", if order.is_market { b"market" } else { b"limit" });
        if !order.is_market {
            w.micro("price", i128::from(order.price));
        }
        w.int("quantity", i128::from(order.quantity));
        w.plain("time_in_force", order.time_in_force.as_str().as_bytes());
        w.bool("post_only", order.post_only);
        w.plain("stp", order.stp.as_str().as_bytes());
        if let Some(expire_at) = order.expire_at {
            w.int("expire_at", i128::from(expire_at));
        }
        w.end();
    }

    /// The first failing check's reason, else the instrument and the price.
    fn check_new_order(&self, c: &NewOrder<'_>) -> Result<(u32, i64), &'static str> {
        if !self.well_formed(c) {
            return Err("invalid_order");
        }
        if let Some(&account) = self.account_ids.get(c.account) {
            if self.accounts[account as usize].open.contains_key(c.client_order_id) {
                return Err("duplicate_client_order_id");
            }
        }
        let index = *self.instrument_ids.get(c.instrument).ok_or("unknown_instrument")?;
        let instrument = &self.instruments[index as usize];
        if instrument.closed {
            return Err("instrument_closed");
        }
        let mut price = 0;
        if let Some(text) = c.price {
            price = parse_price(text, instrument.tick);
            if price == 0 {
                return Err("invalid_price");
            }
        }
        if !(1..=i128::from(instrument.max_order_quantity)).contains(&c.quantity) {
            return Err("invalid_quantity");
        }
        let is_buy = c.side == Side::Buy;
        if c.post_only && instrument.opposite(is_buy).crosses(is_buy, price) {
            return Err("post_only_would_cross");
        }
        let (hold, asset) = if is_buy {
            (cost(c.quantity, i128::from(price), i128::from(instrument.hold_fee_bps)), USDC_ASSET)
        } else {
            (c.quantity, index + 1)
        };
        let available = match self.account_ids.get(c.account) {
            Some(&account) => self.available(account, asset),
            None => 0,
        };
        if hold > available {
            return Err("insufficient_funds");
        }
        Ok((index, price))
    }

    fn well_formed(&self, c: &NewOrder<'_>) -> bool {
        let time_in_force = c.time_in_force;
        let market_time_in_force =
            matches!(time_in_force, Some(TimeInForce::Ioc | TimeInForce::Fok));
        if c.order_type == OrderType::Market {
            if c.price.is_some() || c.post_only {
                return false;
            }
            if time_in_force.is_some() && !market_time_in_force {
                return false;
            }
        } else if c.price.is_none() {
            return false;
        }
        if c.post_only && market_time_in_force {
            return false;
        }
        if time_in_force == Some(TimeInForce::Gtd) {
            return c.expire_at.is_some_and(|expire_at| expire_at > self.time);
        }
        c.expire_at.is_none()
    }

    // -- execution -------------------------------------------------------------------------

    /// Match an incoming (or repriced) order, then rest or cancel what is left.
    fn execute(&mut self, slot: u32) {
        if !self.match_order(slot) {
            return;
        }
        let order = &self.orders[slot as usize];
        if order.quantity == order.filled {
            self.close(slot);
        } else if order.is_market {
            self.cancel(slot, "market");
        } else if order.time_in_force == TimeInForce::Ioc {
            self.cancel(slot, "ioc");
        } else {
            let (instrument, is_buy) = (order.instrument, order.is_buy);
            self.instruments[instrument as usize].side_mut(is_buy).add(&mut self.orders, slot);
        }
    }

    /// Trade the taker against the opposite side; false when self-trade prevention ended it.
    fn match_order(&mut self, taker: u32) -> bool {
        let (instrument, is_buy, is_market, limit, account) = {
            let t = &self.orders[taker as usize];
            (t.instrument, t.is_buy, t.is_market, t.price, t.account)
        };
        loop {
            let remaining = self.orders[taker as usize].remaining();
            if remaining <= 0 {
                return true;
            }
            let Some(level) = self.instruments[instrument as usize].opposite(is_buy).levels.last()
            else {
                return true;
            };
            let (level_price, maker) = (level.price, level.head);
            if !is_market && (if is_buy { level_price > limit } else { level_price < limit }) {
                return true;
            }
            let maker_order = &self.orders[maker as usize];
            if maker_order.account == account {
                if !self.prevent_self_trade(taker, maker) {
                    return false;
                }
                continue;
            }
            let mut quantity = remaining.min(maker_order.remaining());
            if is_market && is_buy {
                let budget = self.available(account, USDC_ASSET);
                let fee_bps = self.instruments[instrument as usize].taker_fee_bps;
                quantity = affordable(quantity, budget, level_price, fee_bps);
                if quantity == 0 {
                    return true;
                }
            }
            self.trade(maker, taker, quantity);
        }
    }

    fn trade(&mut self, maker: u32, taker: u32, quantity: i64) {
        let (instrument, price, taker_is_buy) = {
            let m = &self.orders[maker as usize];
            (m.instrument, m.price, self.orders[taker as usize].is_buy)
        };
        let (maker_bps, taker_bps) = {
            let i = &self.instruments[instrument as usize];
            (i128::from(i.maker_fee_bps), i128::from(i.taker_fee_bps))
        };
        let notional = i128::from(quantity) * i128::from(price);
        let maker_fee = notional * maker_bps / BPS;
        let taker_fee = notional * taker_bps / BPS;
        self.orders[maker as usize].filled += quantity;
        self.orders[taker as usize].filled += quantity;
        let (buyer, buyer_fee, seller, seller_fee) = if taker_is_buy {
            (taker, taker_fee, maker, maker_fee)
        } else {
            (maker, maker_fee, taker, taker_fee)
        };
        let token = instrument + 1;
        let buyer_account = self.orders[buyer as usize].account;
        let seller_account = self.orders[seller as usize].account;
        let hold = self.required_hold(buyer);
        self.set_hold(buyer, hold);
        self.wallet(buyer_account, USDC_ASSET)[0] -= notional + buyer_fee;
        self.wallet(buyer_account, token)[0] += i128::from(quantity);
        let hold = self.required_hold(seller);
        self.set_hold(seller, hold);
        self.wallet(seller_account, token)[0] -= i128::from(quantity);
        self.wallet(seller_account, USDC_ASSET)[0] += notional - seller_fee;
        let fee_account = self.fee_account;
        self.wallet(fee_account, USDC_ASSET)[0] += maker_fee + taker_fee;
        self.trade_counter += 1;
        let seq = self.next_seq();
        let (m, t) = (&self.orders[maker as usize], &self.orders[taker as usize]);
        let w = &mut self.events;
        w.begin("trade", seq, self.time);
        w.id("trade_id", self.trade_counter);
        w.plain("instrument", &self.instruments[instrument as usize].symbol);
        w.micro("price", i128::from(price));
        w.int("quantity", i128::from(quantity));
        w.plain("aggressor_side", if taker_is_buy { b"buy" } else { b"sell" });
        w.plain("maker_account", &self.accounts[m.account as usize].name);
        w.plain("maker_client_order_id", &m.client_order_id);
        w.id("maker_order_id", m.order_id);
        w.micro("maker_fee", maker_fee);
        w.plain("taker_account", &self.accounts[t.account as usize].name);
        w.plain("taker_client_order_id", &t.client_order_id);
        w.id("taker_order_id", t.order_id);
        w.micro("taker_fee", taker_fee);
        w.end();
        if m.quantity == m.filled {
            self.close(maker);
        }
    }

    /// Apply the taker's STP mode; false when the taker is finished.
    fn prevent_self_trade(&mut self, taker: u32, maker: u32) -> bool {
        match self.orders[taker as usize].stp {
            Stp::CancelNewest => {
                self.cancel(taker, "stp");
                false
            }
            Stp::CancelOldest => {
                self.cancel(maker, "stp");
                true
            }
            Stp::CancelBoth => {
                self.cancel(maker, "stp");
                self.cancel(taker, "stp");
                false
            }
            Stp::Decrement => {
                let decrement = self.orders[taker as usize]
                    .remaining()
                    .min(self.orders[maker as usize].remaining());
                self.decrement(maker, decrement);
                self.decrement(taker, decrement)
            }
        }
    }

    /// Reduce an order by `quantity` without a trade; false when that finishes it.
    fn decrement(&mut self, slot: u32, quantity: i64) -> bool {
        let remaining = self.orders[slot as usize].remaining() - quantity;
        if remaining == 0 {
            self.cancel(slot, "stp");
            return false;
        }
        self.orders[slot as usize].quantity -= quantity;
        let hold = self.required_hold(slot);
        self.set_hold(slot, hold);
        let seq = self.next_seq();
        let order = &self.orders[slot as usize];
        let w = &mut self.events;
        w.begin("order_reduced", seq, self.time);
        w.plain("account", &self.accounts[order.account as usize].name);
        w.plain("client_order_id", &order.client_order_id);
        w.id("order_id", order.order_id);
        w.plain("instrument", &self.instruments[order.instrument as usize].symbol);
        w.plain("reason", b"stp");
        w.int("reduced_quantity", i128::from(quantity));
        w.int("remaining_quantity", i128::from(remaining));
        w.end();
        true
    }

    /// Run the normal execution in the head: would it fill the whole quantity?
    fn fills_whole(&self, slot: u32) -> bool {
        let taker = &self.orders[slot as usize];
        let mut needed = taker.remaining();
        let instrument = &self.instruments[taker.instrument as usize];
        let mut budget = self.available(taker.account, USDC_ASSET);
        for level in instrument.opposite(taker.is_buy).levels.iter().rev() {
            if !taker.is_market
                && (if taker.is_buy {
                    level.price > taker.price
                } else {
                    level.price < taker.price
                })
            {
                return false;
            }
            let mut maker = level.head;
            while maker != NIL {
                let m = &self.orders[maker as usize];
                maker = m.next;
                if m.account == taker.account {
                    if taker.stp == Stp::CancelOldest {
                        continue;
                    }
                    return false;
                }
                let mut maker_remaining = m.remaining();
                while maker_remaining != 0 && needed != 0 {
                    let mut quantity = needed.min(maker_remaining);
                    if taker.is_market && taker.is_buy {
                        let fee_bps = instrument.taker_fee_bps;
                        quantity = affordable(quantity, budget, level.price, fee_bps);
                        if quantity == 0 {
                            return false;
                        }
                        budget -= cost(
                            i128::from(quantity),
                            i128::from(level.price),
                            i128::from(fee_bps),
                        );
                    }
                    needed -= quantity;
                    maker_remaining -= quantity;
                }
                if needed == 0 {
                    return true;
                }
            }
        }
        false
    }

    // -- cancel, amend, mass cancel --------------------------------------------------------

    fn find_open(&self, account: &[u8], client_order_id: &[u8]) -> Option<u32> {
        let &id = self.account_ids.get(account)?;
        self.accounts[id as usize].open.get(client_order_id).copied()
    }

    pub fn on_cancel_order(
        &mut self,
        account: &[u8],
        client_order_id: &[u8],
        reason: CancelReason,
    ) {
        match self.find_open(account, client_order_id) {
            Some(slot) => self.cancel(slot, reason.as_str()),
            None => self.reject_order_command(
                "cancel_rejected",
                account,
                client_order_id,
                "unknown_order",
            ),
        }
    }

    fn reject_order_command(
        &mut self,
        event: &str,
        account: &[u8],
        client_order_id: &[u8],
        reason: &str,
    ) {
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin(event, seq, self.time);
        w.plain("account", account);
        w.plain("client_order_id", client_order_id);
        w.plain("reason", reason.as_bytes());
        w.end();
    }

    pub fn on_mass_cancel(
        &mut self,
        account: &[u8],
        instrument: Option<&[u8]>,
        reason: CancelReason,
    ) {
        let mut only = None;
        if let Some(symbol) = instrument {
            match self.instrument_ids.get(symbol) {
                Some(&index) => only = Some(index),
                None => return self.reject_command(b"mass_cancel", "unknown_instrument"),
            }
        }
        let Some(&id) = self.account_ids.get(account) else { return };
        let mut slots = Vec::new();
        let mut slot = self.accounts[id as usize].head;
        while slot != NIL {
            let order = &self.orders[slot as usize];
            if only.is_none_or(|index| order.instrument == index) {
                slots.push(slot);
            }
            slot = order.account_next;
        }
        for slot in slots {
            self.cancel(slot, reason.as_str());
        }
    }

    pub fn on_amend_order(
        &mut self,
        account: &[u8],
        client_order_id: &[u8],
        new_price: Option<&[u8]>,
        new_quantity: Option<i128>,
    ) {
        let slot = self.find_open(account, client_order_id);
        let (slot, price, quantity) = match self.check_amend(slot, new_price, new_quantity) {
            Ok(ok) => ok,
            Err(reason) => {
                return self.reject_order_command(
                    "amend_rejected",
                    account,
                    client_order_id,
                    reason,
                )
            }
        };
        let order = &self.orders[slot as usize];
        if quantity <= order.filled {
            return self.cancel(slot, "amended");
        }
        let loses_priority = price != order.price || quantity > order.quantity;
        let (instrument, is_buy) = (order.instrument, order.is_buy);
        if loses_priority {
            self.instruments[instrument as usize].side_mut(is_buy).remove(&mut self.orders, slot);
        }
        let order = &mut self.orders[slot as usize];
        order.price = price;
        order.quantity = quantity;
        let hold = self.required_hold(slot);
        self.set_hold(slot, hold);
        let seq = self.next_seq();
        let order = &self.orders[slot as usize];
        let w = &mut self.events;
        w.begin("order_amended", seq, self.time);
        w.plain("account", &self.accounts[order.account as usize].name);
        w.plain("client_order_id", &order.client_order_id);
        w.id("order_id", order.order_id);
        w.plain("instrument", &self.instruments[instrument as usize].symbol);
        w.micro("price", i128::from(price));
        w.int("quantity", i128::from(quantity));
        w.int("remaining_quantity", i128::from(order.remaining()));
        w.end();
        if loses_priority {
            self.execute(slot);
        }
    }

    /// The first failing check's reason, else the order, the new price and total quantity.
    fn check_amend(
        &self,
        slot: Option<u32>,
        new_price: Option<&[u8]>,
        new_quantity: Option<i128>,
    ) -> Result<(u32, i64, i64), &'static str> {
        let slot = slot.ok_or("unknown_order")?;
        if new_price.is_none() && new_quantity.is_none() {
            return Err("invalid_order");
        }
        let order = &self.orders[slot as usize];
        let instrument = &self.instruments[order.instrument as usize];
        let mut price = order.price;
        if let Some(text) = new_price {
            price = parse_price(text, instrument.tick);
            if price == 0 {
                return Err("invalid_price");
            }
        }
        let quantity = new_quantity.unwrap_or(i128::from(order.quantity));
        if !(1..=i128::from(instrument.max_order_quantity)).contains(&quantity) {
            return Err("invalid_quantity");
        }
        let quantity = quantity as i64;
        if quantity <= order.filled {
            return Ok((slot, price, quantity));
        }
        let remaining = i128::from(quantity - order.filled);
        let hold_after = if order.is_buy {
            cost(remaining, i128::from(price), i128::from(instrument.hold_fee_bps))
        } else {
            remaining
        };
        if hold_after - order.hold > self.available(order.account, self.order_asset(slot)) {
            return Err("insufficient_funds");
        }
        if order.post_only && instrument.opposite(order.is_buy).crosses(order.is_buy, price) {
            return Err("post_only_would_cross");
        }
        Ok((slot, price, quantity))
    }
}

/// Largest quantity up to `wanted` whose notional plus fee (floored) `budget` pays.
fn affordable(wanted: i64, budget: i128, price: i64, fee_bps: i64) -> i64 {
    let (price, fee_bps) = (i128::from(price), i128::from(fee_bps));
    if cost(i128::from(wanted), price, fee_bps) <= budget {
        return wanted;
    }
    let mut quantity = (budget * BPS).div_euclid(price * (BPS + fee_bps));
    while quantity < i128::from(wanted) && cost(quantity + 1, price, fee_bps) <= budget {
        quantity += 1;
    }
    quantity as i64
}

/// The price in micro-USDC, or 0 when it is not a positive multiple of the tick.
fn parse_price(text: &[u8], tick: i64) -> i64 {
    match parse_positive_micro(text) {
        Some(price) if price % i128::from(tick) == 0 => price as i64,
        _ => 0,
    }
}
