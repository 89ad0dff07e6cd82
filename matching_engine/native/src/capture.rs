//! The engine's whole state as plain data, and an engine rebuilt from it: `capture` and
//! `restore_into` of matching_engine/core/snapshot.py, so that either core restores the
//! other's snapshots and, restored, goes on to the same events and snapshots byte for byte.
//!
//! Books list their orders in priority order, so adding them back in that order keeps time
//! priority; accounts list their open orders in acceptance (order id) order. Balances and
//! supply keep the order they were first credited in, and the expiry heap its layout;
//! issues and deliveries are listed in the order they were made.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::book::{BookSide, Order};
use crate::command::TimeInForce;
use crate::delivery::{Delivery, Issue};
use crate::expiries::{Expiries, Expiry};
use crate::snapshot::{
    shown, Balances, DeliveryState, EngineState, ExpiryState, InstrumentState, IssueState,
    OrderState,
};
use crate::state::{balance_parts, Engine, Instrument};

impl Engine {
    /// The whole state as plain data.
    pub fn capture(&self) -> EngineState {
        let instruments = self
            .instruments
            .iter()
            .map(|instrument| InstrumentState {
                listing: instrument.listing.clone(),
                closed: instrument.closed,
                bids: self.side_state(&instrument.bids),
                asks: self.side_state(&instrument.asks),
            })
            .collect();
        let mut deposit_ids: Vec<_> = self.deposit_ids.iter().cloned().collect();
        deposit_ids.sort_unstable();
        EngineState {
            time: self.time,
            seq: self.seq,
            order_counter: self.order_counter,
            trade_counter: self.trade_counter,
            instruments,
            balances: self.balances_by_account(),
            expiries: self
                .expiries
                .entries()
                .iter()
                .map(|entry| self.expiry_state(entry))
                .collect(),
            deposit_ids,
            supply: self
                .supply
                .iter()
                .map(|(asset, &amount)| (self.asset_name(asset).into(), amount))
                .collect(),
            issues: self.issues.iter().map(|issue| self.issue_state(issue)).collect(),
            deliveries: self
                .deliveries
                .iter()
                .map(|delivery| DeliveryState {
                    issue_id: self.issues[delivery.issue as usize].issue_id.clone(),
                    holder: self.accounts[delivery.holder as usize].name.clone(),
                    quantity: delivery.quantity,
                    reported: delivery.reported,
                })
                .collect(),
        }
    }

    fn issue_state(&self, issue: &Issue) -> IssueState {
        IssueState {
            issue_id: issue.issue_id.clone(),
            account: self.accounts[issue.account as usize].name.clone(),
            instrument: self.instruments[issue.instrument as usize].listing.symbol.clone(),
            node_id: issue.node_id.clone(),
            quantity: issue.quantity,
            unassigned: issue.unassigned,
            bonded: issue.bonded,
        }
    }

    fn side_state(&self, side: &BookSide) -> Vec<OrderState> {
        let order_state = |slot: u32| {
            let order = &self.orders[slot as usize];
            OrderState {
                order_id: order.order_id,
                account: self.accounts[order.account as usize].name.clone(),
                client_order_id: order.client_order_id.clone(),
                is_buy: order.is_buy,
                price: order.price,
                quantity: order.quantity,
                filled: order.filled,
                time_in_force: order.time_in_force,
                expire_at: order.expire_at,
                post_only: order.post_only,
                stp: order.stp,
            }
        };
        side.orders_in_priority(&self.orders).into_iter().map(order_state).collect()
    }

    /// Balances grouped by account, as the Python core's dict of dicts: accounts in the
    /// order of their first balance, each account's assets in the order first credited.
    fn balances_by_account(&self) -> Balances {
        let mut balances: Balances = Vec::new();
        let mut positions: FxHashMap<u32, usize> = FxHashMap::default();
        for (key, &pair) in self.balances.iter() {
            let (account, asset) = balance_parts(key);
            let position = *positions.entry(account).or_insert_with(|| {
                balances.push((self.accounts[account as usize].name.clone(), Vec::new()));
                balances.len() - 1
            });
            balances[position].1.push((self.asset_name(asset).into(), pair));
        }
        balances
    }

    fn expiry_state(&self, entry: &Expiry) -> ExpiryState {
        let order = &self.orders[entry.slot as usize];
        ExpiryState {
            expire_at: entry.expire_at,
            order_id: entry.order_id,
            account: self.accounts[order.account as usize].name.clone(),
            client_order_id: order.client_order_id.clone(),
        }
    }

    /// An engine holding `state`, as it was when captured; Err names what in `state` is
    /// inconsistent (an invariant broken, a name unknown, an order on the wrong side).
    pub fn restore(state: EngineState) -> Result<Engine, String> {
        let mut engine = Engine::new();
        engine.time = state.time;
        engine.seq = state.seq;
        engine.order_counter = state.order_counter;
        engine.trade_counter = state.trade_counter;
        let mut books = Vec::with_capacity(state.instruments.len());
        for (index, listed) in state.instruments.into_iter().enumerate() {
            let symbol = listed.listing.symbol.clone();
            if listed.listing.tick <= 0 {
                return Err(format!(
                    "instrument {:?} has tick {}",
                    shown(&symbol),
                    listed.listing.tick
                ));
            }
            if let Some(bond) = listed.listing.bond.filter(|&bond| bond < 0) {
                return Err(format!("instrument {:?} has bond {bond}", shown(&symbol)));
            }
            if engine.instrument_ids.insert(symbol.clone(), index as u32).is_some() {
                return Err(format!("instrument {:?} listed twice", shown(&symbol)));
            }
            engine.instruments.push(Instrument::new(listed.listing, listed.closed));
            books.push((listed.bids, listed.asks));
        }
        engine.restore_balances(state.balances, state.supply)?;
        engine.deposit_ids.extend(state.deposit_ids);
        engine.restore_books(books)?;
        engine.restore_expiries(state.expiries)?;
        engine.restore_issues(state.issues)?;
        engine.restore_deliveries(state.deliveries)?;
        engine.next_close_ns = engine.earliest_open_delivery();
        engine.validate()?;
        Ok(engine)
    }

    fn asset_named(&self, name: &[u8]) -> Result<u32, String> {
        self.asset_id(name).ok_or_else(|| {
            format!("asset {:?} is neither USDC nor a listed instrument", shown(name))
        })
    }

    fn restore_balances(
        &mut self,
        balances: Balances,
        supply: Vec<(Box<[u8]>, i128)>,
    ) -> Result<(), String> {
        for (account, assets) in balances {
            if assets.is_empty() {
                return Err(format!("account {:?} has no balances", shown(&account)));
            }
            let account = self.account_id(&account);
            for (asset, pair) in assets {
                let asset = self.asset_named(&asset)?;
                *self.wallet(account, asset) = pair;
            }
        }
        for (asset, amount) in supply {
            let asset = self.asset_named(&asset)?;
            *self.supply.entry(asset) = amount;
        }
        Ok(())
    }

    /// Rest every order on its side in the order listed, then make them open in order id
    /// order, each holding what it requires (the balances' held sums already count it).
    fn restore_books(
        &mut self,
        books: Vec<(Vec<OrderState>, Vec<OrderState>)>,
    ) -> Result<(), String> {
        let mut restored: Vec<(u64, u32)> = Vec::new();
        for (index, (bids, asks)) in books.into_iter().enumerate() {
            let listed =
                bids.into_iter().map(|o| (true, o)).chain(asks.into_iter().map(|o| (false, o)));
            for (is_buy, order) in listed {
                self.check_restored_order(index, is_buy, &order)?;
                let account = self.account_id(&order.account);
                let slot = self.alloc_order(Order {
                    order_id: order.order_id,
                    account,
                    instrument: index as u32,
                    is_buy,
                    post_only: order.post_only,
                    open: true,
                    time_in_force: order.time_in_force,
                    stp: order.stp,
                    price: order.price,
                    quantity: order.quantity,
                    filled: order.filled,
                    expire_at: order.expire_at,
                    client_order_id: order.client_order_id,
                    ..Order::default()
                });
                self.instruments[index].side_mut(is_buy).add(&mut self.orders, slot);
                restored.push((order.order_id, slot));
            }
        }
        restored.sort_unstable();
        for (_, slot) in restored {
            self.register(slot);
            self.orders[slot as usize].hold = self.required_hold(slot);
        }
        Ok(())
    }

    fn check_restored_order(
        &self,
        instrument: usize,
        is_buy: bool,
        order: &OrderState,
    ) -> Result<(), String> {
        let symbol = shown(&self.instruments[instrument].listing.symbol);
        if order.is_buy != is_buy {
            let (side, kind) = if is_buy { ("bids", "a sell") } else { ("asks", "a buy") };
            return Err(format!(
                "instrument {symbol:?} lists {kind} order {} among its {side}",
                order.order_id
            ));
        }
        if !(1..=self.order_counter).contains(&order.order_id) {
            return Err(format!(
                "order {} is not among the order ids given so far (1 to {})",
                order.order_id, self.order_counter
            ));
        }
        Ok(())
    }

    /// The heap as listed. An entry of an open order names the order's slot; an entry whose
    /// order has closed names a closed order kept for it, holding the names it lists.
    fn restore_expiries(&mut self, expiries: Vec<ExpiryState>) -> Result<(), String> {
        let mut order_ids = FxHashSet::default();
        let mut entries = Vec::with_capacity(expiries.len());
        for expiry in expiries {
            let order_id = expiry.order_id;
            if !order_ids.insert(order_id) {
                return Err(format!("expiries list order {order_id} twice"));
            }
            if !(1..=self.order_counter).contains(&order_id) {
                let counter = self.order_counter;
                return Err(format!(
                    "expiries list order {order_id}, not among the order ids given so far \
                     (1 to {counter})"
                ));
            }
            let open = self
                .find_open(&expiry.account, &expiry.client_order_id)
                .filter(|&slot| self.orders[slot as usize].order_id == order_id);
            let slot = match open {
                Some(slot) => slot,
                None => {
                    let account = self.account_id(&expiry.account);
                    self.alloc_order(Order {
                        order_id,
                        account,
                        time_in_force: TimeInForce::Gtd,
                        expire_at: Some(expiry.expire_at),
                        client_order_id: expiry.client_order_id,
                        ..Order::default()
                    })
                }
            };
            self.orders[slot as usize].expiry_pending = true;
            entries.push(Expiry { expire_at: expiry.expire_at, order_id, slot });
        }
        self.expiries = Expiries::from_entries(entries);
        Ok(())
    }

    /// The issues as listed, each of a deliverable instrument; their quantities are checked
    /// with the other invariants.
    fn restore_issues(&mut self, issues: Vec<IssueState>) -> Result<(), String> {
        for issue in issues {
            let name = shown(&issue.issue_id).into_owned();
            let instrument = match self.instrument_ids.get(&issue.instrument) {
                Some(&index) if self.instruments[index as usize].listing.bond.is_some() => index,
                Some(_) => {
                    let symbol = shown(&issue.instrument);
                    return Err(format!("issue {name:?} is of {symbol:?}, not deliverable"));
                }
                None => {
                    let symbol = shown(&issue.instrument);
                    return Err(format!(
                        "issue {name:?} is of {symbol:?}, not a listed instrument"
                    ));
                }
            };
            let index = self.issues.len() as u32;
            if self.issue_ids.insert(issue.issue_id.clone(), index).is_some() {
                return Err(format!("issue {name:?} listed twice"));
            }
            let account = self.account_id(&issue.account);
            self.instruments[instrument as usize].issues.push(index);
            self.issues.push(Issue {
                issue_id: issue.issue_id,
                account,
                instrument,
                node_id: issue.node_id,
                quantity: issue.quantity,
                unassigned: issue.unassigned,
                bonded: issue.bonded,
            });
        }
        Ok(())
    }

    /// The deliveries as listed, each of a listed issue, one per (issue, holder).
    fn restore_deliveries(&mut self, deliveries: Vec<DeliveryState>) -> Result<(), String> {
        for delivery in deliveries {
            let name = shown(&delivery.issue_id);
            let Some(&issue) = self.issue_ids.get(&delivery.issue_id) else {
                return Err(format!("a delivery of issue {name:?}, which is not listed"));
            };
            let holder = self.account_id(&delivery.holder);
            let index = self.deliveries.len() as u32;
            if self.delivery_ids.insert((issue, holder), index).is_some() {
                let holder = shown(&delivery.holder);
                return Err(format!("the delivery of issue {name:?} to {holder:?} listed twice"));
            }
            self.deliveries.push(Delivery {
                issue,
                holder,
                quantity: delivery.quantity,
                reported: delivery.reported,
            });
        }
        Ok(())
    }
}
