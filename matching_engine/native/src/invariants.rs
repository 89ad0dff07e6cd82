//! The internal invariants of the engine (matching_engine/core/invariants.py), checked from
//! scratch: balances, holds, conservation (bonds included), books, registrations, expiries,
//! issues and deliveries.

use rustc_hash::FxHashMap;

use crate::book::{BookSide, NIL};
use crate::state::{balance_key, balance_parts, Engine, USDC_ASSET};

impl Engine {
    /// Check balances, holds, conservation, books, registrations, expiries, issues and
    /// deliveries from scratch.
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
        for issue in &self.issues {
            let bond = i128::from(issue.bonded) * self.bond_per_hour(issue);
            *totals.entry(USDC_ASSET).or_insert(0) += bond;
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
        self.check_expiries()?;
        self.check_issues()
    }

    /// Each issue is of a deliverable instrument, listed by it and findable by its id; its
    /// GPU-hours are all unassigned until the close and none after; what is bonded is what is
    /// unassigned plus what is assigned and not reported; no more is assigned than issued,
    /// and only at a close. A closed deliverable instrument has no token left.
    fn check_issues(&self) -> Result<(), String> {
        let mut assigned = vec![0i64; self.issues.len()];
        let mut due = vec![0i64; self.issues.len()];
        for (index, delivery) in self.deliveries.iter().enumerate() {
            let issue = delivery.issue as usize;
            let closed = self.instruments[self.issues[issue].instrument as usize].closed;
            if delivery.quantity < 1
                || !closed
                || self.delivery_ids.get(&(delivery.issue, delivery.holder))
                    != Some(&(index as u32))
            {
                return Err(format!("delivery {index} misfiled"));
            }
            assigned[issue] += delivery.quantity;
            if !delivery.reported {
                due[issue] += delivery.quantity;
            }
        }
        let mut listed = 0;
        for (index, instrument) in self.instruments.iter().enumerate() {
            let mine = |&i: &u32| self.issues[i as usize].instrument as usize == index;
            if !instrument.issues.windows(2).all(|w| w[0] < w[1])
                || !instrument.issues.iter().all(mine)
                || (instrument.listing.bond.is_none() && !instrument.issues.is_empty())
            {
                return Err(format!("instrument {index} lists issues not its own"));
            }
            listed += instrument.issues.len();
            let token_left = self.supply.get(index as u32 + 1).is_some_and(|&supply| supply != 0);
            if instrument.closed && instrument.listing.bond.is_some() && token_left {
                return Err(format!("instrument {index} closed with tokens left"));
            }
        }
        if listed != self.issues.len() || self.issue_ids.len() != self.issues.len() {
            return Err("issues listed and issues made disagree".into());
        }
        for (index, issue) in self.issues.iter().enumerate() {
            let closed = self.instruments[issue.instrument as usize].closed;
            let consistent = self.issue_ids.get(&issue.issue_id) == Some(&(index as u32))
                && issue.quantity >= 1
                && issue.unassigned == if closed { 0 } else { issue.quantity }
                && issue.bonded == issue.unassigned + due[index]
                && assigned[index] <= issue.quantity;
            if !consistent {
                let name = String::from_utf8_lossy(&issue.issue_id);
                return Err(format!("issue {name:?} quantities or registration"));
            }
        }
        Ok(())
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
