//! The best bid and ask of each instrument, kept from the public order events: `index/book.py`
//! with instruments by their index in the calculator.
//!
//! Only orders that can rest are kept (the calculator decides which); a trade, reduction or
//! cancel naming an order the book does not hold changes nothing. Each instrument's side is
//! a map of price level to the quantity resting there. The levels of a closed instrument
//! stay (the Python book forgets the instrument, but its orders still point at them and
//! their fills still change them); only the calculator's eligible instruments, which are
//! open, are ever asked for their best prices.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

/// Quantity resting per price level, micro-USDC -> GPU-hours.
type Levels = BTreeMap<i128, i128>;

#[derive(Clone, Copy)]
struct Order {
    instrument: u32,
    is_buy: bool,
    price: i128,
    remaining: i128,
}

/// Resting orders and price levels of every listed instrument.
#[derive(Default)]
pub struct Book {
    orders: FxHashMap<Box<[u8]>, Order>,
    /// Per instrument: bids, asks.
    sides: Vec<[Levels; 2]>,
}

/// Why the book refuses an event (the Python book's ValueError).
pub type BookResult = Result<(), String>;

impl Book {
    /// Make room for the next instrument's levels (instruments are numbered in listing order).
    pub fn list(&mut self) {
        self.sides.push([Levels::new(), Levels::new()]);
    }

    /// Keep a limit order that may rest on `instrument` (None: not open, or never listed).
    pub fn accept(
        &mut self,
        order_id: &[u8],
        symbol: &[u8],
        instrument: Option<u32>,
        is_buy: bool,
        price: i128,
        quantity: i128,
    ) -> BookResult {
        if self.orders.contains_key(order_id) {
            return Err(format!("order {} accepted twice", text(order_id)));
        }
        let Some(instrument) = instrument else {
            return Err(format!(
                "order {} accepted on {}, which is not open",
                text(order_id),
                text(symbol)
            ));
        };
        add(self.level(instrument, is_buy), price, quantity)?;
        self.orders
            .insert(order_id.into(), Order { instrument, is_buy, price, remaining: quantity });
        Ok(())
    }

    /// Take a trade's quantity off its maker and its taker, those the book keeps.
    pub fn fill(
        &mut self,
        maker_order_id: &[u8],
        taker_order_id: &[u8],
        quantity: i128,
    ) -> BookResult {
        self.set_remaining(maker_order_id, |remaining| remaining - quantity)?;
        self.set_remaining(taker_order_id, |remaining| remaining - quantity)
    }

    pub fn reduce(&mut self, order_id: &[u8], remaining: i128) -> BookResult {
        self.set_remaining(order_id, |_| remaining)
    }

    pub fn cancel(&mut self, order_id: &[u8]) -> BookResult {
        self.set_remaining(order_id, |_| 0)
    }

    pub fn amend(&mut self, order_id: &[u8], price: i128, remaining: i128) -> BookResult {
        let Some(&order) = self.orders.get(order_id) else { return Ok(()) };
        self.set_remaining(order_id, |_| 0)?;
        if remaining > 0 {
            add(self.level(order.instrument, order.is_buy), price, remaining)?;
            self.orders.insert(order_id.into(), Order { price, remaining, ..order });
        }
        Ok(())
    }

    /// The best bid and the best ask of an instrument (None for an empty side).
    pub fn best(&self, instrument: u32) -> (Option<i128>, Option<i128>) {
        let [bids, asks] = &self.sides[instrument as usize];
        (
            bids.last_key_value().map(|(&price, _)| price),
            asks.first_key_value().map(|(&price, _)| price),
        )
    }

    fn level(&mut self, instrument: u32, is_buy: bool) -> &mut Levels {
        &mut self.sides[instrument as usize][usize::from(!is_buy)]
    }

    /// Set what remains of an order the book keeps (`remaining` of what remains now), its
    /// level with it; forget it at 0. Nothing for an order the book does not keep.
    fn set_remaining(
        &mut self,
        order_id: &[u8],
        remaining: impl FnOnce(i128) -> i128,
    ) -> BookResult {
        let Some(order) = self.orders.get_mut(order_id) else { return Ok(()) };
        let (was, now) = (order.remaining, remaining(order.remaining));
        if now < 0 {
            return Err(format!("order {} filled beyond its quantity", text(order_id)));
        }
        order.remaining = now;
        let (instrument, is_buy, price) = (order.instrument, order.is_buy, order.price);
        let levels = self.level(instrument, is_buy);
        let resting = levels.get_mut(&price).expect("an order's level holds its quantity");
        let left = (*resting - was).checked_add(now).ok_or_else(beyond)?;
        if left != 0 {
            *resting = left;
        } else {
            levels.remove(&price);
        }
        if now == 0 {
            self.orders.remove(order_id);
        }
        Ok(())
    }
}

fn add(levels: &mut Levels, price: i128, quantity: i128) -> BookResult {
    let resting = levels.entry(price).or_insert(0);
    *resting = resting.checked_add(quantity).ok_or_else(beyond)?;
    Ok(())
}

fn beyond() -> String {
    "a quantity beyond the native calculator's integers (i128)".to_string()
}

/// Bytes of a decoded string, for a message.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
