//! The commands other than order entry (matching_engine/core/engine.py): time, expiry,
//! instrument close, listings, deposits, withdrawals and malformed commands. `orders.rs`
//! has the order flow, `state.rs` the state they change.

use crate::command::{Amount, Command, ListInstrument};
use crate::money::{parse_micro, parse_positive_micro, parse_token_int, parse_token_text};
use crate::schema::is_strip_client_order_id;
use crate::state::{Engine, Instrument, Listing, NEVER, USDC, USDC_ASSET};

pub const FEE_BPS_MAX: i64 = 1000;

impl Engine {
    /// Apply one command; its events are appended to `self.events`.
    pub fn apply(&mut self, command: &Command<'_>) {
        if let Some(ts) = command.ts() {
            if ts > self.time {
                self.time = ts;
            }
        }
        if self.expiries.first_expire_at().is_some_and(|expire_at| expire_at <= self.time) {
            self.expire_orders();
        }
        if self.next_close_ns <= i128::from(self.time) {
            self.close_instruments();
        }
        match command {
            Command::NewOrder(c) => self.on_new_order(c),
            Command::CancelOrder { account, client_order_id, reason, .. } => {
                self.on_cancel_order(account, client_order_id, *reason)
            }
            Command::AmendOrder { account, client_order_id, new_price, new_quantity, .. } => {
                self.on_amend_order(account, client_order_id, *new_price, *new_quantity)
            }
            Command::MassCancel { account, instrument, reason, .. } => {
                self.on_mass_cancel(account, *instrument, *reason)
            }
            Command::Deposit { account, asset, amount, deposit_id, .. } => {
                self.on_deposit(account, asset, amount, *deposit_id)
            }
            Command::Withdraw { account, asset, amount, .. } => {
                self.on_withdraw(account, asset, amount)
            }
            Command::ListInstrument(c) => self.on_list_instrument(c),
            Command::Tick { .. } => {}
            Command::IssueCapacity(c) => self.on_issue_capacity(c),
            Command::DeliveryReport(c) => self.on_delivery_report(c),
            Command::NewStripOrder(c) => self.on_new_strip_order(c),
            Command::Malformed { kind, ts, account, client_order_id, instrument } => {
                self.on_malformed(kind, ts.is_some(), *account, *client_order_id, *instrument)
            }
        }
    }

    // -- time ------------------------------------------------------------------------------

    /// Cancel the open orders whose expiry has come, in order id order; an entry whose
    /// order closed already frees the order's slot.
    fn expire_orders(&mut self) {
        let mut due: Vec<(u64, u32)> = Vec::new();
        while self.expiries.first_expire_at().is_some_and(|expire_at| expire_at <= self.time) {
            let entry = self.expiries.pop().expect("a first entry");
            let order = &mut self.orders[entry.slot as usize];
            order.expiry_pending = false;
            if order.open && order.order_id == entry.order_id {
                due.push((entry.order_id, entry.slot));
            } else {
                self.free_slots.push(entry.slot);
            }
        }
        due.sort_unstable();
        for (_, slot) in due {
            self.cancel(slot, "expired");
        }
    }

    fn close_instruments(&mut self) {
        for index in 0..self.instruments.len() {
            let instrument = &self.instruments[index];
            if instrument.closed || instrument.listing.delivery_start > self.time {
                continue;
            }
            let mut resting = instrument.bids.orders_in_priority(&self.orders);
            resting.extend(instrument.asks.orders_in_priority(&self.orders));
            resting.sort_unstable_by_key(|&slot| self.orders[slot as usize].order_id);
            for slot in resting {
                self.cancel(slot, "instrument_closed");
            }
            self.instruments[index].closed = true;
            let seq = self.next_seq();
            self.events.begin("instrument_closed", seq, self.time);
            self.events.plain("symbol", &self.instruments[index].listing.symbol);
            self.events.end();
            if self.instruments[index].listing.bond.is_some() {
                self.redeem(index as u32);
            }
        }
        self.next_close_ns = self.earliest_open_delivery();
    }

    /// The delivery start of the open instrument delivered first (NEVER when none is open).
    pub fn earliest_open_delivery(&self) -> i128 {
        self.instruments
            .iter()
            .filter(|i| !i.closed)
            .map(|i| i128::from(i.listing.delivery_start))
            .min()
            .unwrap_or(NEVER)
    }

    // -- instruments and money -------------------------------------------------------------

    fn on_list_instrument(&mut self, c: &ListInstrument<'_>) {
        if self.instrument_ids.contains_key(c.symbol) {
            return self.reject_command(b"list_instrument", "duplicate_instrument");
        }
        let tick = parse_positive_micro(c.tick_size).unwrap_or(0);
        // Some(None): a bond given that is not a USDC amount.
        let bond = c.bond_per_gpu_hour.map(parse_micro);
        if tick == 0
            || bond == Some(None)
            || c.symbol == USDC
            || c.maker_fee_bps > FEE_BPS_MAX
            || c.taker_fee_bps > FEE_BPS_MAX
            || c.delivery_start <= self.time
        {
            return self.reject_command(b"list_instrument", "invalid_command");
        }
        let bond = bond.flatten();
        let index = self.instruments.len() as u32;
        let listing = Listing {
            symbol: c.symbol.into(),
            gpu: c.gpu.into(),
            region: c.region.into(),
            delivery_start: c.delivery_start,
            delivery_hours: c.delivery_hours,
            tick: tick as i64,
            max_order_quantity: c.max_order_quantity,
            maker_fee_bps: c.maker_fee_bps,
            taker_fee_bps: c.taker_fee_bps,
            bond: bond.map(|micro| micro as i64),
        };
        self.instruments.push(Instrument::new(listing, false));
        self.instrument_ids.insert(c.symbol.into(), index);
        self.next_close_ns = self.next_close_ns.min(i128::from(c.delivery_start));
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin("instrument_listed", seq, self.time);
        w.plain("symbol", c.symbol);
        w.str("gpu", c.gpu);
        w.str("region", c.region);
        w.int("delivery_start", i128::from(c.delivery_start));
        w.int("delivery_hours", i128::from(c.delivery_hours));
        w.micro("tick_size", tick);
        w.int("max_order_quantity", i128::from(c.max_order_quantity));
        w.int("maker_fee_bps", i128::from(c.maker_fee_bps));
        w.int("taker_fee_bps", i128::from(c.taker_fee_bps));
        if let Some(micro) = bond {
            w.micro("bond_per_gpu_hour", micro);
        }
        w.end();
    }

    /// Return Err(reason) for an unknown asset, the token of a deliverable instrument that has
    /// closed (its tokens are redeemed), or a bad amount; else (asset id, amount).
    fn check_amount(&self, asset: &[u8], amount: &Amount<'_>) -> Result<(u32, i128), &'static str> {
        let asset_id = self.asset_id(asset).ok_or("unknown_asset")?;
        if asset_id != USDC_ASSET {
            let instrument = &self.instruments[(asset_id - 1) as usize];
            if instrument.closed && instrument.listing.bond.is_some() {
                return Err("instrument_closed");
            }
        }
        let parsed = match (asset_id == USDC_ASSET, amount) {
            (true, Amount::Text(text)) => parse_positive_micro(text),
            (true, Amount::Integer { .. }) => None,
            (false, Amount::Text(text)) => parse_token_text(text),
            (false, Amount::Integer { value, .. }) => parse_token_int(*value),
        };
        parsed.map(|value| (asset_id, value)).ok_or("invalid_amount")
    }

    fn on_deposit(
        &mut self,
        account: &[u8],
        asset: &[u8],
        amount: &Amount<'_>,
        deposit_id: Option<&[u8]>,
    ) {
        let mut checked = self.check_amount(asset, amount);
        if let (Ok(_), Some(id)) = (&checked, deposit_id) {
            if self.deposit_ids.contains(id) {
                checked = Err("duplicate_deposit");
            }
        }
        let (asset_id, value) = match checked {
            Ok(ok) => ok,
            Err(reason) => {
                return self.reject_funds("deposit_rejected", account, asset, amount, reason)
            }
        };
        if let Some(id) = deposit_id {
            self.deposit_ids.insert(id.into());
        }
        let account_id = self.account_id(account);
        self.wallet(account_id, asset_id)[0] += value;
        *self.supply.entry(asset_id) += value;
        self.begin_funds_event("deposited", account, asset, asset_id, value);
        if let Some(id) = deposit_id {
            self.events.str("deposit_id", id);
        }
        self.events.end();
    }

    fn on_withdraw(&mut self, account: &[u8], asset: &[u8], amount: &Amount<'_>) {
        let account_id = self.account_id(account);
        let checked = self.check_amount(asset, amount).and_then(|(asset_id, value)| {
            if value > self.available(account_id, asset_id) {
                Err("insufficient_funds")
            } else {
                Ok((asset_id, value))
            }
        });
        let (asset_id, value) = match checked {
            Ok(ok) => ok,
            Err(reason) => {
                return self.reject_funds("withdrawal_rejected", account, asset, amount, reason)
            }
        };
        self.wallet(account_id, asset_id)[0] -= value;
        *self.supply.entry(asset_id) -= value;
        self.begin_funds_event("withdrawn", account, asset, asset_id, value);
        self.events.end();
    }

    /// Begin the event of a deposit or withdrawal made, its amount in the asset's wire form
    /// (a decimal string for USDC); the caller ends it.
    fn begin_funds_event(
        &mut self,
        event_type: &str,
        account: &[u8],
        asset: &[u8],
        asset_id: u32,
        amount: i128,
    ) {
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin(event_type, seq, self.time);
        w.plain("account", account);
        w.plain("asset", asset);
        if asset_id == USDC_ASSET {
            w.micro("amount", amount);
        } else {
            w.int("amount", amount);
        }
    }

    /// Refuse a deposit or withdrawal, echoing its asset and amount as given.
    fn reject_funds(
        &mut self,
        event_type: &str,
        account: &[u8],
        asset: &[u8],
        amount: &Amount<'_>,
        reason: &str,
    ) {
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin(event_type, seq, self.time);
        w.plain("account", account);
        w.str("asset", asset);
        match amount {
            Amount::Text(text) => w.str("amount", text),
            Amount::Integer { literal, .. } => w.int_literal("amount", literal),
        }
        w.plain("reason", reason.as_bytes());
        w.end();
    }

    // -- rejections ------------------------------------------------------------------------

    /// Reject a command that did not decode, by the rules of docs/protocol-notes.md.
    fn on_malformed(
        &mut self,
        kind: &[u8],
        has_ts: bool,
        account: Option<&[u8]>,
        client_order_id: Option<&[u8]>,
        instrument: Option<&[u8]>,
    ) {
        let known = matches!(
            kind,
            b"list_instrument"
                | b"deposit"
                | b"withdraw"
                | b"new_order"
                | b"cancel_order"
                | b"amend_order"
                | b"mass_cancel"
                | b"tick"
                | b"issue_capacity"
                | b"delivery_report"
                | b"new_strip_order"
        );
        let names_account = matches!(
            kind,
            b"deposit"
                | b"withdraw"
                | b"new_order"
                | b"cancel_order"
                | b"amend_order"
                | b"mass_cancel"
                | b"new_strip_order"
        );
        let names_order =
            matches!(kind, b"new_order" | b"cancel_order" | b"amend_order" | b"new_strip_order");
        if !known
            || !has_ts
            || (names_account && account.is_none())
            || (names_order && client_order_id.is_none())
        {
            return self.reject_command(kind, "invalid_command");
        }
        let (Some(account), Some(client_order_id)) = (account, client_order_id) else {
            return self.reject_command(kind, "invalid_command");
        };
        let seq = self.next_seq();
        let w = &mut self.events;
        match kind {
            b"new_order" => {
                let named = instrument.filter(|symbol| self.instrument_ids.contains_key(*symbol));
                w.begin("order_rejected", seq, self.time);
                w.plain("account", account);
                w.plain("client_order_id", client_order_id);
                w.plain("reason", b"invalid_order");
                if let Some(symbol) = named {
                    w.plain("instrument", symbol);
                }
            }
            b"amend_order" => {
                w.begin("amend_rejected", seq, self.time);
                w.plain("account", account);
                w.plain("client_order_id", client_order_id);
                w.plain("reason", b"invalid_order");
            }
            // An id too long to name the strip's legs is malformed syntax, as a missing one.
            b"new_strip_order" if !is_strip_client_order_id(client_order_id) => {
                w.begin("command_rejected", seq, self.time);
                w.str("command", kind);
                w.plain("reason", b"invalid_command");
            }
            b"new_strip_order" => {
                w.begin("strip_rejected", seq, self.time);
                w.plain("account", account);
                w.plain("client_order_id", client_order_id);
                w.plain("reason", b"invalid_order");
            }
            _ => {
                w.begin("command_rejected", seq, self.time);
                w.str("command", kind);
                w.plain("reason", b"invalid_command");
            }
        }
        w.end();
    }

    pub fn reject_command(&mut self, kind: &[u8], reason: &str) {
        let seq = self.next_seq();
        self.events.begin("command_rejected", seq, self.time);
        self.events.str("command", kind);
        self.events.plain("reason", reason.as_bytes());
        self.events.end();
    }
}
