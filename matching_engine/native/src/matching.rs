//! Matching (matching_engine/core/orders.py): trades (an order's or a strip leg's), fees,
//! self-trade prevention, the fok simulation and the market buy's cap.

use crate::book::{cost, BPS, NIL};
use crate::command::{Stp, TimeInForce};
use crate::state::{Engine, USDC_ASSET};

/// The taker of a trade: an order, or a strip's leg, which has no order (so no fill count
/// and no hold) and trades under the strip's id and a client order id naming the leg.
#[derive(Clone, Copy)]
pub(crate) enum Taker<'a> {
    Order(u32),
    Leg { account: u32, is_buy: bool, strip_id: u64, client_order_id: &'a [u8] },
}

impl Engine {
    // -- execution -------------------------------------------------------------------------

    /// Match an incoming (or repriced) order, then rest or cancel what is left.
    pub(crate) fn execute(&mut self, slot: u32) {
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
                let fee_bps = self.instruments[instrument as usize].listing.taker_fee_bps;
                quantity = affordable(quantity, budget, level_price, fee_bps);
                if quantity == 0 {
                    return true;
                }
            }
            self.trade(maker, Taker::Order(taker), quantity);
        }
    }

    /// Fill `quantity` of the maker at its price to the taker: fees, holds, balances, the
    /// `trade` event; a maker filled whole is closed.
    pub(crate) fn trade(&mut self, maker: u32, taker: Taker<'_>, quantity: i64) {
        let (instrument, price) = {
            let m = &self.orders[maker as usize];
            (m.instrument, m.price)
        };
        let (taker_account, taker_is_buy, taker_slot) = match taker {
            Taker::Order(slot) => {
                let t = &self.orders[slot as usize];
                (t.account, t.is_buy, Some(slot))
            }
            Taker::Leg { account, is_buy, .. } => (account, is_buy, None),
        };
        let (maker_bps, taker_bps) = {
            let i = &self.instruments[instrument as usize];
            (i128::from(i.listing.maker_fee_bps), i128::from(i.listing.taker_fee_bps))
        };
        let notional = i128::from(quantity) * i128::from(price);
        let maker_fee = notional * maker_bps / BPS;
        let taker_fee = notional * taker_bps / BPS;
        self.orders[maker as usize].filled += quantity;
        if let Some(slot) = taker_slot {
            self.orders[slot as usize].filled += quantity;
        }
        let maker_account = self.orders[maker as usize].account;
        // In the Python core's order (protocol.effects.trade_moves), which orders balances.
        let (buyer, buyer_fee, seller, seller_fee) = if taker_is_buy {
            self.refresh_taker_hold(taker_slot);
            self.refresh_hold(maker);
            (taker_account, taker_fee, maker_account, maker_fee)
        } else {
            self.refresh_hold(maker);
            self.refresh_taker_hold(taker_slot);
            (maker_account, maker_fee, taker_account, taker_fee)
        };
        let token = instrument + 1;
        self.wallet(buyer, USDC_ASSET)[0] -= notional + buyer_fee;
        self.wallet(buyer, token)[0] += i128::from(quantity);
        self.wallet(seller, token)[0] -= i128::from(quantity);
        self.wallet(seller, USDC_ASSET)[0] += notional - seller_fee;
        let fee_account = self.fee_account;
        self.wallet(fee_account, USDC_ASSET)[0] += maker_fee + taker_fee;
        self.trade_counter += 1;
        let seq = self.next_seq();
        let m = &self.orders[maker as usize];
        let (taker_client_order_id, taker_order_id) = match taker {
            Taker::Order(slot) => {
                let t = &self.orders[slot as usize];
                (&*t.client_order_id, t.order_id)
            }
            Taker::Leg { client_order_id, strip_id, .. } => (client_order_id, strip_id),
        };
        let w = &mut self.events;
        w.begin("trade", seq, self.time);
        w.id("trade_id", self.trade_counter);
        w.plain("instrument", &self.instruments[instrument as usize].listing.symbol);
        w.micro("price", i128::from(price));
        w.int("quantity", i128::from(quantity));
        w.plain("aggressor_side", if taker_is_buy { b"buy" } else { b"sell" });
        w.plain("maker_account", &self.accounts[m.account as usize].name);
        w.plain("maker_client_order_id", &m.client_order_id);
        w.id("maker_order_id", m.order_id);
        w.micro("maker_fee", maker_fee);
        w.plain("taker_account", &self.accounts[taker_account as usize].name);
        w.plain("taker_client_order_id", taker_client_order_id);
        w.id("taker_order_id", taker_order_id);
        w.micro("taker_fee", taker_fee);
        w.end();
        if m.quantity == m.filled {
            self.close(maker);
        }
    }

    /// Refresh the hold of a taker that is an order (a strip's leg holds nothing).
    #[inline]
    fn refresh_taker_hold(&mut self, taker_slot: Option<u32>) {
        if let Some(slot) = taker_slot {
            self.refresh_hold(slot);
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
        self.refresh_hold(slot);
        let w = self.begin_order_event("order_reduced", slot);
        w.plain("reason", b"stp");
        w.int("reduced_quantity", i128::from(quantity));
        w.int("remaining_quantity", i128::from(remaining));
        w.end();
        true
    }

    /// Run the normal execution in the head: would it fill the whole quantity?
    pub(crate) fn fills_whole(&self, slot: u32) -> bool {
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
                        let fee_bps = instrument.listing.taker_fee_bps;
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
