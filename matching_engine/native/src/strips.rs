//! Strip orders (PROTOCOL.md v2, read as docs/protocol-notes.md "Strip orders (v2)";
//! matching_engine/core/strips.py): `quantity` GPU-hours in each of 2 to 168 consecutive
//! delivery hours of one GPU class and region, all or nothing, at a total price limit,
//! never resting.
//!
//! The checks run in the readings' order, the last of them a simulation of every leg
//! against the book that records the fills it finds. A strip passes over its own account's
//! orders instead of preventing self-trades, so nothing changes the book between the
//! simulation and the execution, which makes exactly the recorded fills: the book is
//! walked once, then traded.

use crate::book::{BPS, NIL};
use crate::command::{NewStripOrder, Side, STRIP_LEGS_MAX, STRIP_LEGS_MIN};
use crate::matching::Taker;
use crate::money::{format_u64, parse_positive_micro};
use crate::state::{Engine, Listing, USDC_ASSET};

/// A listing's `delivery_hours` in the unit of `delivery_start`.
const NS_PER_HOUR: i128 = 3_600_000_000_000;

/// A fill the simulation found: `quantity` from the resting order in slot `maker`, for the
/// leg at index `leg`.
struct Fill {
    leg: u32,
    maker: u32,
    quantity: i64,
}

/// What the simulation found a strip would do: its fills in the order they are made, and
/// their notional and taker fees summed, in micro-USDC.
struct Plan {
    fills: Vec<Fill>,
    notional: i128,
    taker_fees: i128,
}

impl Engine {
    pub fn on_new_strip_order(&mut self, c: &NewStripOrder<'_>) {
        match self.check_strip(c) {
            Ok((limit_total, plan)) => self.execute_strip(c, limit_total, &plan),
            Err(reason) => {
                let seq = self.next_seq();
                let w = &mut self.events;
                w.begin("strip_rejected", seq, self.time);
                w.plain("account", c.account);
                w.plain("client_order_id", c.client_order_id);
                w.plain("reason", reason.as_bytes());
                w.end();
            }
        }
    }

    /// The first failing check's reason, else `limit_total` in micro-USDC and what the
    /// strip will do.
    fn check_strip(&self, c: &NewStripOrder<'_>) -> Result<(i128, Plan), &'static str> {
        let legs = self.strip_legs(c)?;
        let limit_total = parse_positive_micro(c.limit_total).ok_or("invalid_price")?;
        let quantity = c.quantity as i64;
        let is_buy = c.side == Side::Buy;
        let account = self.account_ids.get(c.account).copied();
        let plan = self
            .simulate_strip(&legs, account, is_buy, quantity)
            .ok_or("insufficient_liquidity")?;
        let exceeds =
            if is_buy { plan.notional > limit_total } else { plan.notional < limit_total };
        if exceeds {
            return Err("limit_exceeded");
        }
        let available = |asset| account.map_or(0, |account| self.available(account, asset));
        let affordable = if is_buy {
            plan.notional + plan.taker_fees <= available(USDC_ASSET)
        } else {
            legs.iter().all(|&index| available(index + 1) >= i128::from(quantity))
        };
        if !affordable {
            return Err("insufficient_funds");
        }
        Ok((limit_total, plan))
    }

    /// The checks before the price's: the legs (2 to 168, none twice), listed, consecutive
    /// hours of one class and region, open, and the quantity within each leg's bounds.
    /// Returns the legs' instruments.
    fn strip_legs(&self, c: &NewStripOrder<'_>) -> Result<Vec<u32>, &'static str> {
        let symbols = &c.instruments;
        if !(STRIP_LEGS_MIN..=STRIP_LEGS_MAX).contains(&symbols.len()) || has_duplicate(symbols) {
            return Err("invalid_order");
        }
        let legs: Vec<u32> = symbols
            .iter()
            .map(|symbol| self.instrument_ids.get(*symbol).copied())
            .collect::<Option<_>>()
            .ok_or("unknown_instrument")?;
        let listing = |index: &u32| &self.instruments[*index as usize].listing;
        let first = listing(&legs[0]);
        let one_class =
            legs.iter().map(listing).all(|l| l.gpu == first.gpu && l.region == first.region);
        let consecutive = legs.windows(2).all(|pair| {
            let (earlier, later) = (listing(&pair[0]), listing(&pair[1]));
            i128::from(later.delivery_start)
                == i128::from(earlier.delivery_start)
                    + i128::from(earlier.delivery_hours) * NS_PER_HOUR
        });
        if !one_class || !consecutive {
            return Err("invalid_order");
        }
        if legs.iter().any(|&index| self.instruments[index as usize].closed) {
            return Err("instrument_closed");
        }
        let too_many = |l: &Listing| c.quantity > i128::from(l.max_order_quantity);
        if c.quantity < 1 || legs.iter().map(listing).any(too_many) {
            return Err("invalid_quantity");
        }
        Ok(legs)
    }

    /// Walk each leg's opposite side as its trades would take it, best price first then
    /// oldest, passing over `account`'s own orders, taking from each maker what is left of
    /// `quantity` or its remaining; None when some leg cannot fill `quantity`.
    fn simulate_strip(
        &self,
        legs: &[u32],
        account: Option<u32>,
        is_buy: bool,
        quantity: i64,
    ) -> Option<Plan> {
        let mut plan = Plan { fills: Vec::with_capacity(legs.len()), notional: 0, taker_fees: 0 };
        for (leg, &index) in legs.iter().enumerate() {
            let instrument = &self.instruments[index as usize];
            let taker_fee_bps = i128::from(instrument.listing.taker_fee_bps);
            let mut left = quantity;
            'book: for level in instrument.opposite(is_buy).levels.iter().rev() {
                let mut maker = level.head;
                while maker != NIL {
                    let order = &self.orders[maker as usize];
                    if Some(order.account) != account {
                        let taken = left.min(order.remaining());
                        let notional = i128::from(taken) * i128::from(order.price);
                        plan.fills.push(Fill { leg: leg as u32, maker, quantity: taken });
                        plan.notional += notional;
                        plan.taker_fees += notional * taker_fee_bps / BPS;
                        left -= taken;
                        if left == 0 {
                            break 'book;
                        }
                    }
                    maker = order.next;
                }
            }
            if left > 0 {
                return None;
            }
        }
        Some(plan)
    }

    /// Accept the strip, make its fills leg by leg as an immediate taker at the makers'
    /// prices, and report its totals.
    fn execute_strip(&mut self, c: &NewStripOrder<'_>, limit_total: i128, plan: &Plan) {
        let account = self.account_id(c.account);
        let is_buy = c.side == Side::Buy;
        self.order_counter += 1;
        let strip_id = self.order_counter;
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin("strip_accepted", seq, self.time);
        w.plain("account", c.account);
        w.plain("client_order_id", c.client_order_id);
        w.id("strip_id", strip_id);
        w.plain("side", if is_buy { b"buy" } else { b"sell" });
        w.plain_list("instruments", c.instruments.iter().copied());
        w.int("quantity", c.quantity);
        w.micro("limit_total", limit_total);
        w.end();
        let mut leg_id = LegClientOrderId::new(c.client_order_id);
        for fill in &plan.fills {
            let client_order_id = leg_id.of(fill.leg);
            let taker = Taker::Leg { account, is_buy, strip_id, client_order_id };
            self.trade(fill.maker, taker, fill.quantity);
        }
        let seq = self.next_seq();
        let w = &mut self.events;
        w.begin("strip_done", seq, self.time);
        w.plain("account", c.account);
        w.plain("client_order_id", c.client_order_id);
        w.id("strip_id", strip_id);
        w.micro("notional", plan.notional);
        w.micro("fees", plan.taker_fees);
        w.end();
    }
}

/// Whether some symbol is given twice.
fn has_duplicate(symbols: &[&[u8]]) -> bool {
    let mut sorted = symbols.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

/// The taker's client order id in a leg's trades, `CLIENT_ORDER_ID:LEG_INDEX`, written in
/// place: at most 59 + 1 + 3 characters, an identifier.
struct LegClientOrderId {
    bytes: [u8; 64],
    prefix: usize,
}

impl LegClientOrderId {
    fn new(client_order_id: &[u8]) -> Self {
        let mut bytes = [0u8; 64];
        let prefix = client_order_id.len() + 1;
        bytes[..prefix - 1].copy_from_slice(client_order_id);
        bytes[prefix - 1] = b':';
        LegClientOrderId { bytes, prefix }
    }

    fn of(&mut self, leg: u32) -> &[u8] {
        let mut digits = [0u8; 20];
        let start = format_u64(&mut digits, u64::from(leg));
        let end = self.prefix + digits.len() - start;
        self.bytes[self.prefix..end].copy_from_slice(&digits[start..]);
        &self.bytes[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::LegClientOrderId;
    use crate::Core;

    #[test]
    fn a_leg_is_named_by_its_index_after_the_strip_id() {
        let mut leg_id = LegClientOrderId::new(b"s-1");
        assert_eq!(leg_id.of(0), b"s-1:0");
        assert_eq!(leg_id.of(167), b"s-1:167");
        assert_eq!(leg_id.of(9), b"s-1:9");
        let longest = [b'x'; 59];
        assert_eq!(LegClientOrderId::new(&longest).of(167).len(), 63);
    }

    const SETUP: &str = concat!(
        r#"{"type":"list_instrument","ts":1,"symbol":"H-0","gpu":"H100","region":"eu","delivery_start":7200000000000,"delivery_hours":1,"tick_size":"0.01","max_order_quantity":9,"maker_fee_bps":0,"taker_fee_bps":30}"#,
        "\n",
        r#"{"type":"list_instrument","ts":1,"symbol":"H-1","gpu":"H100","region":"eu","delivery_start":10800000000000,"delivery_hours":1,"tick_size":"0.01","max_order_quantity":9,"maker_fee_bps":0,"taker_fee_bps":30}"#,
        "\n",
        r#"{"type":"deposit","ts":1,"account":"a","asset":"H-0","amount":5}"#,
        "\n",
        r#"{"type":"deposit","ts":1,"account":"a","asset":"H-1","amount":5}"#,
        "\n",
        r#"{"type":"deposit","ts":1,"account":"b","asset":"USDC","amount":"100"}"#,
        "\n",
        r#"{"type":"new_order","ts":1,"account":"a","client_order_id":"a0","instrument":"H-0","side":"sell","order_type":"limit","price":"2","quantity":5}"#,
        "\n",
        r#"{"type":"new_order","ts":1,"account":"a","client_order_id":"a1","instrument":"H-1","side":"sell","order_type":"limit","price":"3","quantity":5}"#,
        "\n",
    );

    fn events_of(strip: &str) -> String {
        let mut core = Core::default();
        core.apply_batch(SETUP.as_bytes());
        String::from_utf8(core.apply_batch(strip.as_bytes())).expect("UTF-8 events")
    }

    #[test]
    fn a_strip_reads_alike_on_the_fast_path_and_the_general_one() {
        let compact = r#"{"type":"new_strip_order","ts":2,"account":"b","client_order_id":"s","side":"buy","instruments":["H-0","H-1"],"quantity":2,"limit_total":"10.0"}"#;
        let spaced = r#"{"type":"new_strip_order","ts":2,"account":"b","client_order_id":"s","side":"buy","instruments": [ "H\u002d0" , "H-1" ],"quantity":2,"limit_total":"10.0"}"#;
        assert!(crate::fast::decode(compact.as_bytes()).is_some());
        assert!(crate::fast::decode(spaced.as_bytes()).is_none());
        let events = events_of(compact);
        assert_eq!(events_of(spaced), events);
        let lines: Vec<&str> = events.lines().collect();
        assert_eq!(lines.len(), 4, "{events}");
        assert!(
            lines[0].ends_with(r#""instruments":["H-0","H-1"],"quantity":2,"limit_total":"10"}"#)
        );
        assert!(lines[1].contains(
            r#""taker_client_order_id":"s:0","taker_order_id":"3","taker_fee":"0.012"}"#
        ));
        assert!(lines[2].contains(
            r#""taker_client_order_id":"s:1","taker_order_id":"3","taker_fee":"0.018"}"#
        ));
        assert!(lines[3].ends_with(r#""strip_id":"3","notional":"10","fees":"0.03"}"#));
    }

    #[test]
    fn a_refused_strip_changes_nothing_but_the_seq() {
        let mut core = Core::default();
        core.apply_batch(SETUP.as_bytes());
        let before = core.engine.capture();
        let refused = core.apply_batch(
            br#"{"type":"new_strip_order","ts":1,"account":"b","client_order_id":"s","side":"buy","instruments":["H-0","H-1"],"quantity":2,"limit_total":"9.99"}"#,
        );
        assert!(refused.ends_with(
            br#""reason":"limit_exceeded"}
"#
        ));
        let mut after = core.engine.capture();
        assert_eq!(after.seq, before.seq + 1);
        after.seq = before.seq;
        assert_eq!(after, before);
    }
}
