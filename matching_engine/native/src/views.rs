//! The replay final state (matching_engine/core/views.py): balances, open orders, and the
//! bonds and deliveries still outstanding.

use rustc_hash::FxHashMap;

use crate::encode::write_json_str;
use crate::money::{write_i128, write_micro, write_u64};
use crate::state::{balance_parts, Engine, USDC};

impl Engine {
    /// The replay final state as JSON: accounts with a non-zero asset (keys sorted), then
    /// open orders by instrument in listing order, buys then sells, in priority order, then
    /// issues with GPU-hours still bonded and assignments not yet reported, in the order made.
    pub fn final_state_json(&self) -> String {
        type Balances<'a> = Vec<(&'a [u8], i128, i128)>;
        let mut by_account: FxHashMap<u32, Balances<'_>> = FxHashMap::default();
        for (key, &[available, held]) in self.balances.iter() {
            if available != 0 || held != 0 {
                let (account, asset) = balance_parts(key);
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
                let usdc = *asset == USDC;
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
                    write_json_str(&mut out, &instrument.listing.symbol);
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
        out.push(b']');
        self.write_outstanding_deliveries(&mut out);
        out.push(b'}');
        String::from_utf8(out).expect("identifiers and numbers are UTF-8")
    }

    /// `,"issues":[...],"deliveries":[...]`: the bonds still held and the deliveries due.
    fn write_outstanding_deliveries(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"issues\":[");
        let bonded = self.issues.iter().filter(|issue| issue.bonded > 0);
        for (i, issue) in bonded.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"issue_id\":");
            write_json_str(out, &issue.issue_id);
            out.extend_from_slice(b",\"account\":");
            write_json_str(out, &self.accounts[issue.account as usize].name);
            out.extend_from_slice(b",\"instrument\":");
            write_json_str(out, &self.instruments[issue.instrument as usize].listing.symbol);
            out.extend_from_slice(b",\"node_id\":");
            write_json_str(out, &issue.node_id);
            out.extend_from_slice(b",\"quantity\":");
            write_i128(out, i128::from(issue.bonded));
            out.extend_from_slice(b",\"bond\":\"");
            write_micro(out, i128::from(issue.bonded) * self.bond_per_hour(issue));
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"],\"deliveries\":[");
        let due = self.deliveries.iter().filter(|delivery| !delivery.reported);
        for (i, delivery) in due.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"issue_id\":");
            write_json_str(out, &self.issues[delivery.issue as usize].issue_id);
            out.extend_from_slice(b",\"holder\":");
            write_json_str(out, &self.accounts[delivery.holder as usize].name);
            out.extend_from_slice(b",\"quantity\":");
            write_i128(out, i128::from(delivery.quantity));
            out.push(b'}');
        }
        out.push(b']');
    }
}
