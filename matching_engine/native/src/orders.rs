//! Order entry and matching (matching_engine/core/orders.py): new, cancel, amend, mass
//! cancel; trades, fees, self-trade prevention, fok simulation, the market buy's cap.

use crate::book::{cost, Order, NIL};
use crate::command::{CancelReason, NewOrder, OrderType, Side, TimeInForce};
use crate::expiries::Expiry;
use crate::money::parse_positive_micro;
use crate::state::{Engine, USDC_ASSET};

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
            open: true,
            time_in_force,
            stp: c.stp,
            price,
            quantity: c.quantity as i64,
            expire_at: c.expire_at,
            client_order_id: c.client_order_id.into(),
            ..Order::default()
        });
        self.write_order_accepted(c, slot);
        self.register(slot);
        self.refresh_hold(slot);
        if time_in_force == TimeInForce::Fok && !self.fills_whole(slot) {
            return self.cancel(slot, "fok");
        }
        if time_in_force == TimeInForce::Gtd {
            let expire_at = c.expire_at.expect("a well-formed gtd order has expire_at");
            self.expiries.push(Expiry { expire_at, order_id, slot });
            self.orders[slot as usize].expiry_pending = true;
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
            price = parse_price(text, instrument.listing.tick);
            if price == 0 {
                return Err("invalid_price");
            }
        }
        if !(1..=i128::from(instrument.listing.max_order_quantity)).contains(&c.quantity) {
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

    // -- cancel, amend, mass cancel --------------------------------------------------------

    pub(crate) fn find_open(&self, account: &[u8], client_order_id: &[u8]) -> Option<u32> {
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
        let remaining = order.remaining();
        self.refresh_hold(slot);
        let w = self.begin_order_event("order_amended", slot);
        w.micro("price", i128::from(price));
        w.int("quantity", i128::from(quantity));
        w.int("remaining_quantity", i128::from(remaining));
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
            price = parse_price(text, instrument.listing.tick);
            if price == 0 {
                return Err("invalid_price");
            }
        }
        let quantity = new_quantity.unwrap_or(i128::from(order.quantity));
        if !(1..=i128::from(instrument.listing.max_order_quantity)).contains(&quantity) {
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

/// The price in micro-USDC, or 0 when it is not a positive multiple of the tick.
fn parse_price(text: &[u8], tick: i64) -> i64 {
    match parse_positive_micro(text) {
        Some(price) if price % i128::from(tick) == 0 => price as i64,
        _ => 0,
    }
}
