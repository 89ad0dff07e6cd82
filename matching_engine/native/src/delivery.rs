//! Delivery (PROTOCOL.md v2, and the readings of docs/protocol-notes.md "Delivery (v2)"):
//! capacity issued under a USDC bond, assigned to the token holders when its instrument
//! closes, and settled by delivery reports.
//!
//! A bond is kept outside every balance: an issue's `bonded` GPU-hours at the instrument's
//! bond per hour, until they are released to the issuer or paid to a holder. So USDC's
//! supply (deposited - withdrawn) is the balances plus the bonds, and a token's supply
//! (deposited + issued - withdrawn - redeemed) is its balances.

use rustc_hash::FxHashMap;

use crate::command::{DeliveryReport, IssueCapacity, PPM};
use crate::state::{balance_key, balance_parts, Engine, USDC_ASSET};

/// An accepted issue of capacity.
pub struct Issue {
    pub issue_id: Box<[u8]>,
    pub account: u32,
    pub instrument: u32,
    pub node_id: Box<[u8]>,
    /// GPU-hours as issued.
    pub quantity: i64,
    /// GPU-hours neither released nor assigned at close (all of them until the close).
    pub unassigned: i64,
    /// GPU-hours still under bond: the unassigned ones and those assigned but not reported.
    pub bonded: i64,
}

/// An assignment made at close: `quantity` GPU-hours of an issue due to a holder.
pub struct Delivery {
    /// Index into `Engine::issues`.
    pub issue: u32,
    pub holder: u32,
    pub quantity: i64,
    pub reported: bool,
}

impl Engine {
    /// The bond per GPU-hour of an issue's instrument, in micro-USDC.
    pub(crate) fn bond_per_hour(&self, issue: &Issue) -> i128 {
        let bond = self.instruments[issue.instrument as usize].listing.bond;
        i128::from(bond.expect("issues are only of deliverable instruments"))
    }

    // -- issue -----------------------------------------------------------------------------

    pub fn on_issue_capacity(&mut self, c: &IssueCapacity<'_>) {
        let (instrument, bond) = match self.check_issue(c) {
            Ok(ok) => ok,
            Err(reason) => {
                let seq = self.next_seq();
                let w = &mut self.events;
                w.begin("issue_rejected", seq, self.time);
                w.plain("issue_id", c.issue_id);
                w.plain("account", c.account);
                w.plain("reason", reason.as_bytes());
                return w.end();
            }
        };
        let quantity = c.quantity as i64;
        let account = self.account_id(c.account);
        self.wallet(account, USDC_ASSET)[0] -= bond;
        self.wallet(account, instrument + 1)[0] += i128::from(quantity);
        *self.supply.entry(instrument + 1) += i128::from(quantity);
        let index = self.issues.len() as u32;
        self.issues.push(Issue {
            issue_id: c.issue_id.into(),
            account,
            instrument,
            node_id: c.node_id.into(),
            quantity,
            unassigned: quantity,
            bonded: quantity,
        });
        self.issue_ids.insert(c.issue_id.into(), index);
        self.instruments[instrument as usize].issues.push(index);
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin("capacity_issued", seq, self.time);
        w.plain("issue_id", c.issue_id);
        w.plain("account", c.account);
        w.plain("instrument", c.instrument);
        w.plain("node_id", c.node_id);
        w.int("quantity", i128::from(quantity));
        w.micro("bond", bond);
        w.end();
    }

    /// The first failing check's reason, else the instrument and the bond in micro-USDC.
    fn check_issue(&self, c: &IssueCapacity<'_>) -> Result<(u32, i128), &'static str> {
        if self.issue_ids.contains_key(c.issue_id) {
            return Err("duplicate_issue");
        }
        let index = *self.instrument_ids.get(c.instrument).ok_or("unknown_instrument")?;
        let instrument = &self.instruments[index as usize];
        let per_hour = instrument.listing.bond.ok_or("not_deliverable")?;
        if instrument.closed {
            return Err("instrument_closed");
        }
        if !(1..=i128::from(instrument.listing.max_order_quantity)).contains(&c.quantity) {
            return Err("invalid_quantity");
        }
        let bond = c.quantity * i128::from(per_hour);
        let available = match self.account_ids.get(c.account) {
            Some(&account) => self.available(account, USDC_ASSET),
            None => 0,
        };
        if bond > available {
            return Err("insufficient_funds");
        }
        Ok((index, bond))
    }

    // -- close -----------------------------------------------------------------------------

    /// Redeem the tokens of a deliverable instrument that has just closed (its orders are
    /// canceled, so every token is in an `available` balance): the issuers' own tokens
    /// release their bonds, the other holders are assigned deliveries, and what nobody holds
    /// releases its bond. Balances are set to 0 first, which no event shows.
    pub(crate) fn redeem(&mut self, instrument: u32) {
        let mut tokens = self.take_tokens(instrument + 1);
        let issues = self.instruments[instrument as usize].issues.clone();
        for &index in &issues {
            let issuer = self.issues[index as usize].account;
            let Some(own) = tokens.get_mut(&issuer) else { continue };
            let share = (*own).min(i128::from(self.issues[index as usize].unassigned)) as i64;
            if share > 0 {
                *own -= i128::from(share);
                self.release_unassigned(index, share);
            }
        }
        self.assign(&issues, tokens);
        for &index in &issues {
            let unassigned = self.issues[index as usize].unassigned;
            if unassigned > 0 {
                self.release_unassigned(index, unassigned);
            }
        }
    }

    /// Set every balance of `token` to 0 (the entries stay), lower its supply by as much, and
    /// return what each account had.
    fn take_tokens(&mut self, token: u32) -> FxHashMap<u32, i128> {
        let mut tokens: FxHashMap<u32, i128> = FxHashMap::default();
        for (key, &[available, _]) in self.balances.iter() {
            let (account, asset) = balance_parts(key);
            if asset == token && available > 0 {
                tokens.insert(account, available);
            }
        }
        for &account in tokens.keys() {
            self.balances.entry(balance_key(account, token))[0] = 0;
        }
        let redeemed: i128 = tokens.values().sum();
        if redeemed != 0 {
            *self.supply.entry(token) -= redeemed;
        }
        tokens
    }

    /// Assign the holders' `tokens` (what the issuers' own issues did not take), holders in
    /// ascending byte order of account, each from the issues still unassigned, oldest first.
    fn assign(&mut self, issues: &[u32], tokens: FxHashMap<u32, i128>) {
        let mut holders: Vec<(u32, i128)> = tokens.into_iter().filter(|&(_, n)| n > 0).collect();
        holders.sort_unstable_by(|a, b| {
            self.accounts[a.0 as usize].name.cmp(&self.accounts[b.0 as usize].name)
        });
        let mut next = 0; // issues before it have nothing left to assign
        for (holder, mut wanted) in holders {
            while wanted > 0 && next < issues.len() {
                let index = issues[next];
                let unassigned = self.issues[index as usize].unassigned;
                if unassigned == 0 {
                    next += 1;
                    continue;
                }
                let quantity = wanted.min(i128::from(unassigned)) as i64;
                wanted -= i128::from(quantity);
                self.issues[index as usize].unassigned -= quantity;
                self.write_delivery_assigned(index, holder, quantity);
                let delivery = self.deliveries.len() as u32;
                self.deliveries.push(Delivery { issue: index, holder, quantity, reported: false });
                self.delivery_ids.insert((index, holder), delivery);
            }
        }
    }

    fn write_delivery_assigned(&mut self, index: u32, holder: u32, quantity: i64) {
        let seq = self.next_seq();
        let issue = &self.issues[index as usize];
        let w = &mut self.events;
        w.begin("delivery_assigned", seq, self.time);
        w.plain("instrument", &self.instruments[issue.instrument as usize].listing.symbol);
        w.plain("issue_id", &issue.issue_id);
        w.plain("issuer", &self.accounts[issue.account as usize].name);
        w.plain("node_id", &issue.node_id);
        w.plain("holder", &self.accounts[holder as usize].name);
        w.int("quantity", i128::from(quantity));
        w.end();
    }

    /// Release the bond of `quantity` unassigned GPU-hours of an issue to its issuer.
    fn release_unassigned(&mut self, index: u32, quantity: i64) {
        let issue = &mut self.issues[index as usize];
        issue.unassigned -= quantity;
        issue.bonded -= quantity;
        let amount = i128::from(quantity) * self.bond_per_hour(&self.issues[index as usize]);
        self.release_bond(index, quantity, amount);
    }

    /// Pay `amount` of an issue's bond back to its issuer, for `quantity` GPU-hours.
    fn release_bond(&mut self, index: u32, quantity: i64, amount: i128) {
        let issuer = self.issues[index as usize].account;
        self.wallet(issuer, USDC_ASSET)[0] += amount;
        let seq = self.next_seq();
        let issue = &self.issues[index as usize];
        let w = &mut self.events;
        w.begin("bond_released", seq, self.time);
        w.plain("issue_id", &issue.issue_id);
        w.plain("account", &self.accounts[issuer as usize].name);
        w.int("quantity", i128::from(quantity));
        w.micro("amount", amount);
        w.end();
    }

    // -- report ----------------------------------------------------------------------------

    /// Settle an assignment: the holder is paid for the undelivered share out of the bond,
    /// the issuer gets the rest back.
    pub fn on_delivery_report(&mut self, c: &DeliveryReport<'_>) {
        let delivery = match self.check_report(c) {
            Ok(delivery) => delivery,
            Err(reason) => {
                let seq = self.next_seq();
                let w = &mut self.events;
                w.begin("report_rejected", seq, self.time);
                w.plain("issue_id", c.issue_id);
                w.plain("holder", c.holder);
                w.plain("reason", reason.as_bytes());
                return w.end();
            }
        };
        let Delivery { issue: index, holder, quantity, .. } = self.deliveries[delivery as usize];
        self.deliveries[delivery as usize].reported = true;
        let issue = &self.issues[index as usize];
        let bond = i128::from(quantity) * self.bond_per_hour(issue);
        let compensation = bond * (PPM - c.delivered_ppm) / PPM;
        let (instrument, issuer) = (issue.instrument, issue.account);
        self.issues[index as usize].bonded -= quantity;
        self.wallet(holder, USDC_ASSET)[0] += compensation;
        let seq = self.next_seq();
        let issue = &self.issues[index as usize];
        let w = &mut self.events;
        w.begin("delivery_settled", seq, self.time);
        w.plain("instrument", &self.instruments[instrument as usize].listing.symbol);
        w.plain("issue_id", &issue.issue_id);
        w.plain("issuer", &self.accounts[issuer as usize].name);
        w.plain("holder", c.holder);
        w.int("quantity", i128::from(quantity));
        w.int("delivered_ppm", c.delivered_ppm);
        w.micro("compensation", compensation);
        if let Some(evidence) = c.evidence {
            w.str("evidence", evidence);
        }
        w.end();
        self.release_bond(index, quantity, bond - compensation);
    }

    /// The first failing check's reason, else the index of the assignment reported.
    fn check_report(&self, c: &DeliveryReport<'_>) -> Result<u32, &'static str> {
        let &index = self.issue_ids.get(c.issue_id).ok_or("unknown_issue")?;
        let issue = &self.issues[index as usize];
        if !self.instruments[issue.instrument as usize].closed {
            return Err("not_assigned");
        }
        let &delivery = self
            .account_ids
            .get(c.holder)
            .and_then(|holder| self.delivery_ids.get(&(index, *holder)))
            .ok_or("not_assigned")?;
        if self.deliveries[delivery as usize].reported {
            return Err("already_reported");
        }
        if !(0..=PPM).contains(&c.delivered_ppm) {
            return Err("invalid_ppm");
        }
        Ok(delivery)
    }
}
