//! Read-only views of the engine: the replay final state (matching_engine/core/views.py)
//! and the internal invariants (matching_engine/core/invariants.py).

use rustc_hash::FxHashMap;

use crate::book::{BookSide, NIL};
use crate::encode::write_json_str;
use crate::engine::{Engine, USDC_ASSET};
use crate::money::{write_i128, write_micro, write_u64};

impl Engine {
    fn asset_name(&self, asset: u32) -> &[u8] {
        if asset == USDC_ASSET {
            b"USDC"
        } else {
            &self.instruments[(asset - 1) as usize].symbol
        }
    }

    /// The replay final state as JSON: accounts with a non-zero asset (keys sorted), then
    /// open orders by instrument in listing order, buys then sells, in priority order.
    pub fn final_state_json(&self) -> String {
        type Balances<'a> = Vec<(&'a [u8], i128, i128)>;
        let mut by_account: FxHashMap<u32, Balances<'_>> = FxHashMap::default();
        for (&key, &[available, held]) in &self.balances {
            if available != 0 || held != 0 {
                let (account, asset) = ((key >> 32) as u32, key as u32);
                by_account.entry(account).or_default().push((
                    self.asset_name(asset),
                    available,
                    held,
                ));
            }
        }
        let mut accounts: Vec<_> = by_account.into_iter().collect();
        accounts.sort_by(|a, b| {
            self.accounts[a.0 as usize].name.cmp(&self.accounts[b.0 as usize].name)
        });
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"accounts\":{");
        for (i, (account, assets)) in accounts.iter_mut().enumerate() {
            assets.sort_by(|a, b| a.0.cmp(b.0));
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, &self.accounts[*account as usize].name);
            out.extend_from_slice(b":{");
            for (j, (asset, available, held)) in assets.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_json_str(&mut out, asset);
                let usdc = *asset == b"USDC";
                for (k, (name, value)) in
                    [("available", *available), ("held", *held)].iter().enumerate()
                {
                    out.extend_from_slice(if k == 0 { b":{\"" } else { b",\"" });
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    if usdc {
                        out.push(b'"');
                        write_micro(&mut out, *value);
                        out.push(b'"');
                    } else {
                        write_i128(&mut out, *value);
                    }
                }
                out.push(b'}');
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"},\"open_orders\":[");
        let mut first = true;
        for instrument in &self.instruments {
            for side in [&instrument.bids, &instrument.asks] {
                for slot in side.orders_in_priority(&self.orders) {
                    let order = &self.orders[slot as usize];
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(b"{\"account\":");
                    write_json_str(&mut out, &self.accounts[order.account as usize].name);
                    out.extend_from_slice(b",\"client_order_id\":");
                    write_json_str(&mut out, &order.client_order_id);
                    out.extend_from_slice(b",\"order_id\":\"");
                    write_u64(&mut out, order.order_id);
                    out.extend_from_slice(b"\",\"instrument\":");
                    write_json_str(&mut out, &instrument.symbol);
                    out.extend_from_slice(if order.is_buy {
                        b",\"side\":\"buy\",\"price\":\""
                    } else {
                        b",\"side\":\"sell\",\"price\":\""
                    });
                    write_micro(&mut out, i128::from(order.price));
                    out.extend_from_slice(b"\",\"quantity\":");
                    write_i128(&mut out, i128::from(order.quantity));
                    out.extend_from_slice(b",\"remaining_quantity\":");
                    write_i128(&mut out, i128::from(order.remaining()));
                    out.push(b'}');
                }
            }
        }
        out.extend_from_slice(b"]}");
        String::from_utf8(out).expect("identifiers and numbers are UTF-8")
    }

    /// Check balances, holds, conservation, books and registrations from scratch.
    pub fn validate(&self) -> Result<(), String> {
        let check =
            |ok: bool, message: &dyn Fn() -> String| if ok { Ok(()) } else { Err(message()) };
        for (&key, &[available, held]) in &self.balances {
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
                *holds.entry((id as u64) << 32 | u64::from(asset)).or_insert(0) += order.hold;
                last_order_id = order.order_id;
                listed += 1;
                slot = order.account_next;
            }
            check(listed == account.open.len(), &|| {
                "account orders and open orders disagree".into()
            })?;
            open_count += listed;
        }
        for (&key, &[_, held]) in &self.balances {
            let wanted = holds.remove(&key).unwrap_or(0);
            check(held == wanted, &|| format!("balance {key:#x} held {held} != holds {wanted}"))?;
        }
        check(holds.values().all(|&h| h == 0), &|| "holds without balances".into())?;
        let mut totals: FxHashMap<u32, i128> = FxHashMap::default();
        for (&key, &[available, held]) in &self.balances {
            *totals.entry(key as u32).or_insert(0) += available + held;
        }
        for (&asset, &supply) in &self.supply {
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
        check(resting == open_count, &|| format!("{resting} resting != {open_count} open"))
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
