//! The internal invariants of the engine (matching_engine/core/invariants.py), checked from
//! scratch: balances, holds, conservation, books, registrations and expiries.

use rustc_hash::FxHashMap;

use crate::book::{BookSide, NIL};
use crate::state::{balance_key, balance_parts, Engine};

impl Engine {
    /// Check balances, holds, conservation, books, registrations and expiries from scratch.
    pub fn validate(&self) -> Result<(), String> {
        let check =
            |ok: bool, message: &dyn Fn() -> String| if ok { Ok(()) } else { Err(message()) };
        for (key, &[available, held]) in self.balances.iter() {
            check(available >= 0 && held >= 0, &|| format!("balance {key:#x} negative"))?;
        }
        let mut holds: FxHashMap<u64, i128> = FxHashMap::default();
        let mut open_count = 0usize;
        for (id, account) in self.accounts.iter().enumerate() {
            let mut slot = account.head;
            let mut last_order_id = 0;
            let mut listed = 0usize;
            while slot != NIL {
                let order = &self.orders[slot as usize];
                check(order.open && order.resting, &|| {
                    format!("order {} not resting", order.order_id)
                })?;
                check(order.account as usize == id, &|| {
                    format!("order {} misfiled", order.order_id)
                })?;
                check(order.order_id > last_order_id, &|| "account orders out of order".into())?;
                check(account.open.get(&order.client_order_id) == Some(&slot), &|| {
                    format!("order {} not findable", order.order_id)
                })?;
                check(order.hold == self.required_hold(slot), &|| {
                    format!("order {} hold stale", order.order_id)
                })?;
                check(0 <= order.filled && order.filled < order.quantity, &|| {
                    format!("order {} quantities", order.order_id)
                })?;
                let asset = self.order_asset(slot);
                *holds.entry(balance_key(id as u32, asset)).or_insert(0) += order.hold;
                last_order_id = order.order_id;
                listed += 1;
                slot = order.account_next;
            }
            check(listed == account.open.len(), &|| {
                "account orders and open orders disagree".into()
            })?;
            open_count += listed;
        }
        for (key, &[_, held]) in self.balances.iter() {
            let wanted = holds.remove(&key).unwrap_or(0);
            check(held == wanted, &|| format!("balance {key:#x} held {held} != holds {wanted}"))?;
        }
        check(holds.values().all(|&h| h == 0), &|| "holds without balances".into())?;
        let mut totals: FxHashMap<u32, i128> = FxHashMap::default();
        for (key, &[available, held]) in self.balances.iter() {
            *totals.entry(balance_parts(key).1).or_insert(0) += available + held;
        }
        for (asset, &supply) in self.supply.iter() {
            check(totals.remove(&asset).unwrap_or(0) == supply, &|| {
                format!("asset {asset} not conserved")
            })?;
        }
        check(totals.values().all(|&t| t == 0), &|| "balances without supply".into())?;
        let mut resting = 0usize;
        for (index, instrument) in self.instruments.iter().enumerate() {
            resting += self.check_side(index as u32, &instrument.bids)?;
            resting += self.check_side(index as u32, &instrument.asks)?;
            if let (Some(bid), Some(ask)) =
                (instrument.bids.best_price(), instrument.asks.best_price())
            {
                check(bid < ask, &|| "book crossed".into())?;
            }
            if instrument.closed {
                check(
                    instrument.bids.levels.is_empty() && instrument.asks.levels.is_empty(),
                    &|| "closed instrument has orders".into(),
                )?;
            }
        }
        check(resting == open_count, &|| format!("{resting} resting != {open_count} open"))?;
        self.check_expiries()
    }

    /// Each expiry entry names the slot of its order, which is kept for it, and no other
    /// slot is kept.
    fn check_expiries(&self) -> Result<(), String> {
        for entry in self.expiries.entries() {
            let order = &self.orders[entry.slot as usize];
            if !order.expiry_pending || order.order_id != entry.order_id {
                return Err(format!("expiry of order {} lost its order", entry.order_id));
            }
        }
        let kept = self.orders.iter().filter(|order| order.expiry_pending).count();
        if kept != self.expiries.entries().len() {
            return Err(format!(
                "{kept} orders kept for {} expiries",
                self.expiries.entries().len()
            ));
        }
        Ok(())
    }

    fn check_side(&self, instrument: u32, side: &BookSide) -> Result<usize, String> {
        let mut count = 0;
        for pair in side.levels.windows(2) {
            let sorted = if side.is_buy {
                pair[0].price < pair[1].price
            } else {
                pair[0].price > pair[1].price
            };
            if !sorted {
                return Err("levels not sorted".into());
            }
        }
        for level in &side.levels {
            let mut slot = level.head;
            let mut live = 0;
            let mut prev = NIL;
            while slot != NIL {
                let order = &self.orders[slot as usize];
                if order.price != level.price
                    || order.is_buy != side.is_buy
                    || order.instrument != instrument
                    || !order.open
                    || !order.resting
                    || order.prev != prev
                {
                    return Err(format!("order {} misplaced", order.order_id));
                }
                live += 1;
                prev = slot;
                slot = order.next;
            }
            if live == 0 || live != level.live || level.tail != prev {
                return Err(format!("level {} count", level.price));
            }
            count += live as usize;
        }
        Ok(count)
    }
}
