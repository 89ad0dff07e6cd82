//! The GPU-hour price index calculator of `index/calculator.py` in Rust: fed the same
//! records in the same batches it releases the same values (value, source, counts, flags,
//! inputs hash, last seq) and refuses the same logs with the same error (a seq gap or an
//! event error), which `tests/unit/test_index_native.py` holds it to.
//!
//! The Python calculator is the reference, so this one follows its steps rather than only
//! its rules: a batch is walked the same way (a run of events that passes no minute
//! boundary is applied with only its first and last events' seq and ts read, the event that
//! crosses a boundary found by the same binary search), events are told apart by the same
//! first bytes, orders that never rest are skipped on the same bytes, and each event is read
//! as msgspec reads it into the same struct (`index_events.rs`). Where a log is malformed,
//! that is what decides which events are read at all, and so which error comes first.
//!
//! `docs/index-methodology.md` states the rules: for each (gpu, region) and minute boundary
//! T, the trades with `ts` in [T - 60 min, T) on the instruments delivered in [T, T + 24 h),
//! volume-weighted; else the mean of those instruments' mids; else the last value; else none;
//! each with the SHA-256 of its inputs (section 6). Integers are i128 (the Python calculator's
//! are unbounded): an integer or a sum beyond that range is an event error here.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::encode::write_json_str;
use crate::index_book::{text, Book};
use crate::index_events::{field, rfind, Fields, Kind, Reader, Struct};
use crate::money::{parse_positive_micro, write_i128};

// The methodology's figures, as index/calculator.py and index/value.py have them.
pub const MINUTE_NS: i128 = 60_000_000_000;
pub const WINDOW_MINUTES: i128 = 60;
pub const HORIZON_NS: i128 = 24 * 3600 * 1_000_000_000;
/// Data sufficiency: a value from trades is `sufficient` with at least this many trades
/// and GPU-hours in its window.
pub const MIN_TRADES: i64 = 5;
pub const MIN_VOLUME: i128 = 40;
/// A ts jump of more minutes than this while classes are listed is refused.
pub const GAP_MINUTES_MAX: i128 = 366 * 24 * 60;

/// How the engine's encoding begins every event: `{"type":"TAG","seq":`.
const TAG_OPENING: &[u8] = b"{\"type\":\"";
const TAG_CLOSING: &[u8] = b"\",\"seq\":";
/// How an order that never rests says so (`index/calculator.py`, `_TIME_IN_FORCE`).
const TIME_IN_FORCE: &[u8] = b"\"time_in_force\":\"";

static HEAD: Struct = Struct::new(
    0,
    &[field("type", Kind::Str), field("seq", Kind::SaturatingInt), field("ts", Kind::Int)],
);
static LISTED: Struct = Struct::new(
    1,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("symbol", Kind::Str),
        field("gpu", Kind::Str),
        field("region", Kind::Str),
        field("delivery_start", Kind::SaturatingInt),
    ],
);
static CLOSED: Struct = Struct::new(
    2,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("symbol", Kind::Str),
    ],
);
static ACCEPTED: Struct = Struct::new(
    3,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("order_id", Kind::Str),
        field("instrument", Kind::Str),
        field("side", Kind::Str),
        field("order_type", Kind::Str),
        field("price", Kind::OptStr),
        field("quantity", Kind::Int),
        field("time_in_force", Kind::Str),
    ],
);
static TRADE: Struct = Struct::new(
    4,
    &[
        field("seq", Kind::Int),
        field("ts", Kind::Int),
        field("instrument", Kind::Str),
        field("price", Kind::Str),
        field("quantity", Kind::Int),
        field("maker_order_id", Kind::Str),
        field("taker_order_id", Kind::Str),
    ],
);
static CANCELED: Struct = Struct::new(
    5,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("order_id", Kind::Str),
    ],
);
static AMENDED: Struct = Struct::new(
    6,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("order_id", Kind::Str),
        field("price", Kind::Str),
        field("remaining_quantity", Kind::Int),
    ],
);
static REDUCED: Struct = Struct::new(
    7,
    &[
        field("seq", Kind::SaturatingInt),
        field("ts", Kind::SaturatingInt),
        field("order_id", Kind::Str),
        field("remaining_quantity", Kind::Int),
    ],
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Trades,
    Mid,
    Last,
    None,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Trades => "trades",
            Source::Mid => "mid",
            Source::Last => "last",
            Source::None => "none",
        }
    }
}

/// One value of the index, as `index.value.IndexValue`; `series` names its (gpu, region)
/// through `IndexCalculator::series_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexValue {
    pub series: u32,
    pub minute_ns: i128,
    pub value_micro: Option<i128>,
    pub source: Source,
    pub trade_count: i64,
    pub volume: i128,
    pub instrument_count: i64,
    pub sufficient: bool,
    pub inputs_hash: [u8; 32],
    pub last_seq: i128,
}

/// `index.errors`: a log whose seqs do not follow on, or an event the index cannot follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// `got` in decimal digits: it may be any integer the log holds.
    SeqGap {
        expected: i128,
        got: String,
    },
    Event {
        message: String,
        seq: Option<i128>,
    },
}

impl IndexError {
    fn at(seq: i128, message: String) -> Self {
        IndexError::Event { message, seq: Some(seq) }
    }
}

type Step<T> = Result<T, IndexError>;
/// What applying one event may fail with: the Python handlers' ValueError text.
type Applied = Result<(), String>;

/// The events the index reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handler {
    Listed,
    Closed,
    Accepted,
    Trade,
    Canceled,
    Amended,
    Reduced,
}

impl Handler {
    fn of(tag: &[u8]) -> Option<Handler> {
        Some(match tag {
            b"instrument_listed" => Handler::Listed,
            b"instrument_closed" => Handler::Closed,
            b"order_accepted" => Handler::Accepted,
            b"trade" => Handler::Trade,
            b"order_canceled" => Handler::Canceled,
            b"order_amended" => Handler::Amended,
            b"order_reduced" => Handler::Reduced,
            _ => return None,
        })
    }
}

/// The fields every event has, and what reads an event of its type.
struct Head {
    /// Saturated to the i128 range: exact for every seq the calculator can expect.
    seq: i128,
    /// The seq in decimal digits, exact, for a seq gap's message.
    seq_text: Box<str>,
    ts: i128,
    /// Err(type) for a type that is not an event type.
    handler: Result<Option<Handler>, String>,
}

struct Instrument {
    symbol: Box<[u8]>,
    series: u32,
    delivery_start: i128,
    closed: bool,
    /// The eligible_version of its series when it was last eligible.
    eligible_mark: i64,
    // Its trades in its class's window: count, GPU-hours, sum of price * quantity.
    trades: i64,
    volume: i128,
    notional: i128,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Triple {
    seq: i128,
    price: i128,
    quantity: i128,
}

/// One class's trades of one minute, in the order they came; once the minute has passed,
/// their totals per instrument (what leaves the window with it).
struct Minute {
    minute: i128,
    trades: Vec<(u32, Triple)>,
    totals: Vec<Totals>,
    /// The hex SHA-256 of the minute's inputs for `digest_version`.
    digest: [u8; 64],
    digest_version: i64,
}

/// One instrument's trades in one minute: count, GPU-hours, sum of price * quantity.
struct Totals {
    instrument: u32,
    trades: i64,
    volume: i128,
    notional: i128,
}

/// The index of one (gpu, region).
struct Series {
    gpu: Box<[u8]>,
    region: Box<[u8]>,
    /// Listed and not closed, in listing order.
    instruments: Vec<u32>,
    current: Option<Minute>,
    /// Past minutes with trades, oldest first.
    window: VecDeque<Minute>,
    eligible: Vec<u32>,
    eligible_version: i64,
    /// The last value published: its value and inputs hash.
    previous: Option<(Option<i128>, [u8; 32])>,
}

/// A series' (gpu, region).
type SeriesKey = (Box<[u8]>, Box<[u8]>);

/// Everything the events build, apart from how they are read.
#[derive(Default)]
struct State {
    /// Of the last event applied.
    seq: i128,
    ts: Option<i128>,
    book: Book,
    instruments: Vec<Instrument>,
    symbols: FxHashMap<Box<[u8]>, u32>,
    series: Vec<Series>,
    series_keys: FxHashMap<SeriesKey, u32>,
    /// By (gpu, region): the order values come in.
    series_order: Vec<u32>,
    /// JSON being hashed.
    json: Vec<u8>,
    triples: Vec<Triple>,
}

/// Feed it the event log from seq 1, in order; it returns every value as it falls due.
pub struct IndexCalculator {
    state: State,
    reader: Reader,
    handlers_by_type: FxHashMap<Box<[u8]>, Option<Handler>>,
    handlers_by_prefix: FxHashMap<Box<[u8]>, Option<Handler>>,
    prefix_bytes: usize,
    /// The error that stopped it: every later feed returns it again.
    failed: Option<IndexError>,
}

impl IndexCalculator {
    /// A calculator for the log's event types (`protocol.events.EVENT_TYPES`), told apart by
    /// their first `prefix_bytes` bytes in the engine's encoding (`index.events.PREFIX_BYTES`).
    pub fn new(event_types: &[&[u8]], prefix_bytes: usize) -> Self {
        let mut handlers_by_type = FxHashMap::default();
        let mut handlers_by_prefix = FxHashMap::default();
        for &tag in event_types {
            let handler = Handler::of(tag);
            handlers_by_type.insert(tag.into(), handler);
            let mut prefix = [TAG_OPENING, tag, TAG_CLOSING].concat();
            prefix.truncate(prefix_bytes);
            handlers_by_prefix.insert(prefix.into(), handler);
        }
        IndexCalculator {
            state: State::default(),
            reader: Reader::default(),
            handlers_by_type,
            handlers_by_prefix,
            prefix_bytes,
            failed: None,
        }
    }

    /// The seq of the last event fed (0 before any).
    pub fn seq(&self) -> i128 {
        self.state.seq
    }

    /// The (gpu, region) of a value's `series`.
    pub fn series_key(&self, series: u32) -> (&[u8], &[u8]) {
        let series = &self.state.series[series as usize];
        (&series.gpu, &series.region)
    }

    /// Apply encoded events (the next ones of the log, in seq order); return the values of
    /// every minute boundary they passed, by minute, then gpu, then region. After an error
    /// the calculator is unusable: every later call returns that error.
    pub fn feed(&mut self, records: &[&[u8]]) -> Step<Vec<IndexValue>> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let mut released = Vec::new();
        let fed = self.feed_into(records, &mut released);
        match fed {
            Ok(()) => Ok(released),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn feed_into(&mut self, records: &[&[u8]], released: &mut Vec<IndexValue>) -> Step<()> {
        let (mut start, end) = (0, records.len());
        while start < end {
            let Some(ts) = self.state.ts else {
                self.apply_one(records[start], released)?;
                start += 1;
                continue;
            };
            let boundary = next_boundary(ts).ok_or_else(|| self.beyond())?;
            let last = self.head(records[end - 1])?;
            if last.ts < boundary {
                return self.apply_run(records, start, end, &last);
            }
            let crossing = self.first_at_or_after(records, start, end - 1, boundary)?;
            if crossing > start {
                let before = self.head(records[crossing - 1])?;
                self.apply_run(records, start, crossing, &before)?;
            }
            self.apply_one(records[crossing], released)?;
            start = crossing + 1;
        }
        Ok(())
    }

    fn head(&mut self, record: &[u8]) -> Step<Head> {
        let fields = self.reader.read(record, &HEAD).map_err(|fault| IndexError::Event {
            message: format!(
                "undecodable event after seq {}: {}",
                self.state.seq,
                fault.describe(HEAD.fields)
            ),
            seq: None,
        })?;
        let tag = fields.text(0);
        let handler = match self.handlers_by_type.get(tag) {
            Some(&handler) => Ok(handler),
            None => Err(text(tag).into_owned()),
        };
        Ok(Head {
            seq: fields.int(1),
            seq_text: fields.int_text(1).into(),
            ts: fields.int(2),
            handler,
        })
    }

    /// The first index in [low, high] whose event has ts >= boundary (high's has).
    fn first_at_or_after(
        &mut self,
        records: &[&[u8]],
        mut low: usize,
        mut high: usize,
        boundary: i128,
    ) -> Step<usize> {
        while low < high {
            let middle = (low + high) / 2;
            if self.head(records[middle])?.ts >= boundary {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }

    /// Apply one event, releasing first the values of every boundary its ts passes.
    fn apply_one(&mut self, record: &[u8], released: &mut Vec<IndexValue>) -> Step<()> {
        let head = self.head(record)?;
        let expected = self.state.seq + 1;
        if head.seq != expected {
            return Err(IndexError::SeqGap { expected, got: head.seq_text.into() });
        }
        if let Some(ts) = self.state.ts {
            if head.ts < ts {
                let message = format!("ts {} is before the previous event's {ts}", head.ts);
                return Err(IndexError::at(head.seq, message));
            }
            self.state.pass_boundaries(head.ts, released)?;
        }
        if let Some(handler) = handler_of(&head, head.seq)? {
            self.apply(handler, record).map_err(|message| IndexError::at(head.seq, message))?;
        }
        self.state.seq = head.seq;
        self.state.ts = Some(head.ts);
        Ok(())
    }

    /// Apply records[start..end], which pass no minute boundary: no value falls due inside,
    /// so only the first and last events' seq and ts are read.
    fn apply_run(&mut self, records: &[&[u8]], start: usize, end: usize, last: &Head) -> Step<()> {
        let first = self.head(records[start])?;
        let seq = self.state.seq;
        let count = (end - start) as i128;
        if first.seq != seq + 1 {
            return Err(IndexError::SeqGap { expected: seq + 1, got: first.seq_text.into() });
        }
        if last.seq != seq + count {
            return Err(IndexError::SeqGap {
                expected: seq + count,
                got: last.seq_text.clone().into(),
            });
        }
        let ts = self.state.ts.expect("a run follows an applied event");
        if first.ts < ts {
            let message = format!("ts {} is before the previous event's {ts}", first.ts);
            return Err(IndexError::at(first.seq, message));
        }
        for (offset, &record) in records[start..end].iter().enumerate() {
            let event_seq = seq + offset as i128 + 1;
            let prefix = &record[..record.len().min(self.prefix_bytes)];
            let handler = match self.handlers_by_prefix.get(prefix) {
                Some(&handler) => handler,
                None => handler_of(&self.head(record)?, event_seq)?, // not the engine's encoding
            };
            if let Some(handler) = handler {
                self.apply(handler, record)
                    .map_err(|message| IndexError::at(event_seq, message))?;
            }
        }
        self.state.seq = last.seq;
        self.state.ts = Some(last.ts);
        Ok(())
    }

    /// Read one event of a kind the index uses and apply it.
    fn apply(&mut self, handler: Handler, record: &[u8]) -> Applied {
        let state = &mut self.state;
        let layout: &Struct = match handler {
            Handler::Listed => &LISTED,
            Handler::Closed => &CLOSED,
            Handler::Accepted => {
                if never_rests(record) {
                    return Ok(()); // not worth decoding
                }
                &ACCEPTED
            }
            Handler::Trade => &TRADE,
            Handler::Canceled => &CANCELED,
            Handler::Amended => &AMENDED,
            Handler::Reduced => &REDUCED,
        };
        let event =
            self.reader.read(record, layout).map_err(|fault| fault.describe(layout.fields))?;
        match handler {
            Handler::Listed => state.on_listed(&event),
            Handler::Closed => state.on_closed(&event),
            Handler::Accepted => state.on_accepted(&event),
            Handler::Trade => state.on_trade(&event),
            Handler::Canceled => state.book.cancel(event.text(2)),
            Handler::Amended => {
                let price = price(event.text(3))?;
                state.book.amend(event.text(2), price, event.int(4))
            }
            Handler::Reduced => state.book.reduce(event.text(2), event.int(3)),
        }
    }

    fn beyond(&self) -> IndexError {
        IndexError::at(self.state.seq + 1, beyond_message())
    }
}

/// What applies an event of `head`'s type (None: one the index does not read).
fn handler_of(head: &Head, seq: i128) -> Step<Option<Handler>> {
    head.handler.clone().map_err(|tag| IndexError::at(seq, format!("unknown event type '{tag}'")))
}

/// Whether an `order_accepted` record says, as the engine writes it, that the order is
/// immediate-or-cancel or fill-or-kill (`"time_in_force":"` cannot occur inside a string
/// value, whose quotes are escaped, so the last one in a record is the field itself).
fn never_rests(record: &[u8]) -> bool {
    let Some(at) = rfind(record, TIME_IN_FORCE) else { return false };
    let value = &record[at + TIME_IN_FORCE.len()..];
    value.starts_with(b"ioc\"") || value.starts_with(b"fok\"")
}

fn price(text_: &[u8]) -> Result<i128, String> {
    parse_positive_micro(text_).ok_or_else(|| {
        format!("price: '{}' is not a price above zero with at most 6 decimals", text(text_))
    })
}

/// The minute boundary after `ts`.
fn next_boundary(ts: i128) -> Option<i128> {
    (ts.div_euclid(MINUTE_NS) + 1).checked_mul(MINUTE_NS)
}

fn beyond_message() -> String {
    "a value beyond the native calculator's integers (i128)".to_string()
}

fn checked(value: Option<i128>) -> Result<i128, String> {
    value.ok_or_else(beyond_message)
}

impl State {
    // -- the events the index reads ----------------------------------------------------------

    fn on_listed(&mut self, event: &Fields<'_>) -> Applied {
        let symbol = event.text(2);
        if self.symbols.contains_key(symbol) {
            return Err(format!("instrument {} listed twice", text(symbol)));
        }
        let key: SeriesKey = (event.text(3).into(), event.text(4).into());
        let series = match self.series_keys.get(&key) {
            Some(&series) => series,
            None => {
                let series = self.series.len() as u32;
                self.series.push(Series {
                    gpu: key.0.clone(),
                    region: key.1.clone(),
                    instruments: Vec::new(),
                    current: None,
                    window: VecDeque::new(),
                    eligible: Vec::new(),
                    eligible_version: 0,
                    previous: None,
                });
                self.series_keys.insert(key, series);
                let all = &self.series;
                self.series_order.push(series);
                self.series_order.sort_by(|&a, &b| {
                    let (a, b) = (&all[a as usize], &all[b as usize]);
                    (&a.gpu, &a.region).cmp(&(&b.gpu, &b.region))
                });
                series
            }
        };
        let instrument = self.instruments.len() as u32;
        self.instruments.push(Instrument {
            symbol: symbol.into(),
            series,
            delivery_start: event.int(5),
            closed: false,
            eligible_mark: -1,
            trades: 0,
            volume: 0,
            notional: 0,
        });
        self.symbols.insert(symbol.into(), instrument);
        self.series[series as usize].instruments.push(instrument);
        self.book.list();
        Ok(())
    }

    fn on_closed(&mut self, event: &Fields<'_>) -> Applied {
        let index = self.instrument(event.text(2))?;
        let instrument = &mut self.instruments[index as usize];
        if !instrument.closed {
            instrument.closed = true;
            let open = &mut self.series[instrument.series as usize].instruments;
            let at = open.iter().position(|&each| each == index).expect("an open instrument");
            open.remove(at);
        }
        Ok(())
    }

    fn on_accepted(&mut self, event: &Fields<'_>) -> Applied {
        let resting = matches!(event.text(8), b"gtc" | b"gtd");
        if event.text(5) != b"limit" || !resting {
            return Ok(());
        }
        let order_id = event.text(2);
        let Some(price_text) = event.str(6) else {
            return Err(format!("limit order {} has no price", text(order_id)));
        };
        let quantity = event.int(7);
        if quantity < 1 {
            return Err(format!("order quantity must be >= 1, got {quantity}"));
        }
        let price = price(price_text)?;
        let symbol = event.text(3);
        let open =
            self.symbols.get(symbol).copied().filter(|&i| !self.instruments[i as usize].closed);
        self.book.accept(order_id, symbol, open, event.text(4) == b"buy", price, quantity)
    }

    fn on_trade(&mut self, event: &Fields<'_>) -> Applied {
        let (seq, ts) = (event.int(0), event.int(1));
        let index = self.instrument(event.text(2))?;
        let price = price(event.text(3))?;
        let quantity = event.int(4);
        if quantity < 1 {
            return Err(format!("trade quantity must be >= 1, got {quantity}"));
        }
        self.book.fill(event.text(5), event.text(6), quantity)?;
        let series = &mut self.series[self.instruments[index as usize].series as usize];
        let minute = ts.div_euclid(MINUTE_NS);
        let current = series.current.get_or_insert_with(|| Minute {
            minute,
            trades: Vec::new(),
            totals: Vec::new(),
            digest: [0; 64],
            digest_version: -1,
        });
        if current.minute != minute {
            return Err(format!(
                "trade at ts {ts} is outside minute {} of the events around it",
                current.minute
            ));
        }
        current.trades.push((index, Triple { seq, price, quantity }));
        Ok(())
    }

    fn instrument(&self, symbol: &[u8]) -> Result<u32, String> {
        self.symbols
            .get(symbol)
            .copied()
            .ok_or_else(|| format!("instrument {} was never listed", text(symbol)))
    }

    // -- minute boundaries -------------------------------------------------------------------

    /// Release the values of every boundary T with self.ts < T <= ts.
    fn pass_boundaries(&mut self, ts: i128, released: &mut Vec<IndexValue>) -> Step<()> {
        let previous = self.ts.expect("boundaries follow an applied event");
        let beyond = || IndexError::at(self.seq + 1, beyond_message());
        let first = next_boundary(previous).ok_or_else(beyond)?;
        if ts < first || self.series_order.is_empty() {
            return Ok(());
        }
        let minutes = ts.checked_sub(first).ok_or_else(beyond)?.div_euclid(MINUTE_NS) + 1;
        if minutes > GAP_MINUTES_MAX {
            let message = format!(
                "ts jumps {minutes} minutes from {previous} to {ts}: more than the \
                 {GAP_MINUTES_MAX} the index publishes at once"
            );
            return Err(IndexError::at(self.seq + 1, message));
        }
        let mut minute_ns = first;
        while minute_ns <= ts {
            for position in 0..self.series_order.len() {
                let series = self.series_order[position];
                let value = self.value_at(series, minute_ns);
                released.push(value.map_err(|message| IndexError::at(self.seq + 1, message))?);
            }
            minute_ns += MINUTE_NS;
        }
        Ok(())
    }

    /// Close the series' minutes before `minute_ns` and compute its value there.
    fn value_at(&mut self, index: u32, minute_ns: i128) -> Result<IndexValue, String> {
        let minute = minute_ns.div_euclid(MINUTE_NS);
        self.end_minute(index)?;
        let (series, instruments) = (&mut self.series[index as usize], &mut self.instruments);
        while series.window.front().is_some_and(|oldest| oldest.minute < minute - WINDOW_MINUTES) {
            let gone = series.window.pop_front().expect("a minute in the window");
            for totals in gone.totals {
                let instrument = &mut instruments[totals.instrument as usize];
                instrument.trades -= totals.trades;
                instrument.volume -= totals.volume;
                instrument.notional -= totals.notional;
            }
        }
        self.update_eligible(index, minute_ns)?;
        let (mut trades, mut volume, mut notional, mut traded_instruments) =
            (0i64, 0i128, 0i128, 0);
        for &instrument in &self.series[index as usize].eligible {
            let instrument = &self.instruments[instrument as usize];
            if instrument.trades != 0 {
                trades += instrument.trades;
                volume = checked(volume.checked_add(instrument.volume))?;
                notional = checked(notional.checked_add(instrument.notional))?;
                traded_instruments += 1;
            }
        }
        let value = if trades != 0 {
            IndexValue {
                series: index,
                minute_ns,
                value_micro: Some(notional / volume),
                source: Source::Trades,
                trade_count: trades,
                volume,
                instrument_count: traded_instruments,
                sufficient: trades >= MIN_TRADES && volume >= MIN_VOLUME,
                inputs_hash: self.trades_hash(index, minute),
                last_seq: self.seq,
            }
        } else {
            self.fallback(index, minute_ns)
        };
        self.series[index as usize].previous = Some((value.value_micro, value.inputs_hash));
        Ok(value)
    }

    /// Total the minute in progress into its instruments and move it into the window.
    fn end_minute(&mut self, index: u32) -> Applied {
        let series = &mut self.series[index as usize];
        let Some(mut current) = series.current.take() else { return Ok(()) };
        for &(instrument, trade) in &current.trades {
            let at = match current.totals.iter().rposition(|totals| totals.instrument == instrument)
            {
                Some(at) => at,
                None => {
                    current.totals.push(Totals { instrument, trades: 0, volume: 0, notional: 0 });
                    current.totals.len() - 1
                }
            };
            let totals = &mut current.totals[at];
            totals.trades += 1;
            totals.volume = checked(totals.volume.checked_add(trade.quantity))?;
            let notional = checked(trade.price.checked_mul(trade.quantity))?;
            totals.notional = checked(totals.notional.checked_add(notional))?;
        }
        for totals in &current.totals {
            let instrument = &mut self.instruments[totals.instrument as usize];
            instrument.trades += totals.trades;
            instrument.volume = checked(instrument.volume.checked_add(totals.volume))?;
            instrument.notional = checked(instrument.notional.checked_add(totals.notional))?;
        }
        series.window.push_back(current);
        Ok(())
    }

    /// The instruments whose trades count at `minute_ns`: delivery in the next 24 h.
    fn update_eligible(&mut self, index: u32, minute_ns: i128) -> Applied {
        let horizon_ns = checked(minute_ns.checked_add(HORIZON_NS))?;
        let series = &mut self.series[index as usize];
        let instruments = &mut self.instruments;
        let eligible: Vec<u32> = series
            .instruments
            .iter()
            .copied()
            .filter(|&i| (minute_ns..horizon_ns).contains(&instruments[i as usize].delivery_start))
            .collect();
        if eligible != series.eligible {
            series.eligible_version += 1;
            for &instrument in &eligible {
                instruments[instrument as usize].eligible_mark = series.eligible_version;
            }
            series.eligible = eligible;
        }
        Ok(())
    }

    /// The value when no trade counts: the mid of the books, else the last value.
    fn fallback(&mut self, index: u32, minute_ns: i128) -> IndexValue {
        let series = &self.series[index as usize];
        let mut quotes: Vec<(&[u8], i128, i128)> = Vec::new();
        for &instrument in &series.eligible {
            if let (Some(bid), Some(ask)) = self.book.best(instrument) {
                quotes.push((&self.instruments[instrument as usize].symbol, bid, ask));
            }
        }
        let json = &mut self.json;
        json.clear();
        let (value_micro, source) = if !quotes.is_empty() {
            quotes.sort_unstable();
            let mids: i128 = quotes.iter().map(|&(_, bid, ask)| (bid + ask) / 2).sum();
            json.extend_from_slice(b"[\"mid\",[");
            for (position, &(symbol, bid, ask)) in quotes.iter().enumerate() {
                json.extend_from_slice(if position == 0 { b"[" } else { b",[" });
                write_json_str(json, symbol);
                json.push(b',');
                write_i128(json, bid);
                json.push(b',');
                write_i128(json, ask);
                json.push(b']');
            }
            json.extend_from_slice(b"]]");
            (Some(mids / quotes.len() as i128), Source::Mid)
        } else if let Some((Some(value), previous_hash)) = series.previous {
            json.extend_from_slice(b"[\"last\",\"");
            json.extend_from_slice(&hex(&previous_hash));
            json.extend_from_slice(b"\"]");
            (Some(value), Source::Last)
        } else {
            json.extend_from_slice(b"[\"none\"]");
            (None, Source::None)
        };
        IndexValue {
            series: index,
            minute_ns,
            value_micro,
            source,
            trade_count: 0,
            volume: 0,
            instrument_count: 0,
            sufficient: false,
            inputs_hash: Sha256::digest(&self.json).into(),
            last_seq: self.seq,
        }
    }

    /// sha256 of ["trades", [the digest of each minute of the window, oldest first]].
    fn trades_hash(&mut self, index: u32, minute: i128) -> [u8; 32] {
        let series = &mut self.series[index as usize];
        let mut digests: Vec<[u8; 64]> = Vec::with_capacity(WINDOW_MINUTES as usize);
        let mut held = 0;
        for each in minute - WINDOW_MINUTES..minute {
            match series.window.get_mut(held) {
                Some(window_minute) if window_minute.minute == each => {
                    let version = series.eligible_version;
                    if window_minute.digest_version != version {
                        window_minute.digest = minute_digest(
                            &window_minute.trades,
                            &self.instruments,
                            version,
                            &mut self.triples,
                            &mut self.json,
                        );
                        window_minute.digest_version = version;
                    }
                    digests.push(window_minute.digest);
                    held += 1;
                }
                _ => digests.push(*EMPTY_MINUTE_DIGEST),
            }
        }
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"[\"trades\",[");
        for (position, digest) in digests.iter().enumerate() {
            json.extend_from_slice(if position == 0 { b"\"" } else { b",\"" });
            json.extend_from_slice(digest);
            json.push(b'"');
        }
        json.extend_from_slice(b"]]");
        Sha256::digest(&self.json).into()
    }
}

/// The hex SHA-256 of `[]`: a minute without inputs.
const EMPTY_MINUTE_DIGEST: &[u8; 64] =
    b"4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";

/// Hex sha256 of [[seq, price, quantity], ...]: a minute's trades on the instruments
/// eligible at `version`, in seq order (in the order they came when one instrument has them
/// all, as the Python calculator keeps each instrument's list).
fn minute_digest(
    trades: &[(u32, Triple)],
    instruments: &[Instrument],
    version: i64,
    triples: &mut Vec<Triple>,
    json: &mut Vec<u8>,
) -> [u8; 64] {
    triples.clear();
    let mut first_instrument = None;
    let mut several = false;
    for &(instrument, trade) in trades {
        if instruments[instrument as usize].eligible_mark == version {
            several |= *first_instrument.get_or_insert(instrument) != instrument;
            triples.push(trade);
        }
    }
    if several {
        triples.sort_unstable();
    }
    json.clear();
    json.push(b'[');
    for (position, triple) in triples.iter().enumerate() {
        if position > 0 {
            json.push(b',');
        }
        write_triple(json, triple);
    }
    json.push(b']');
    hex(&Sha256::digest(&json[..]).into())
}

/// Append `[seq,price,quantity]` as msgspec writes it; in one copy when all three are
/// non-negative and fit 64 bits, as they do in every log the engine writes.
#[inline]
fn write_triple(json: &mut Vec<u8>, triple: &Triple) {
    let values = [triple.seq, triple.price, triple.quantity].map(u64::try_from);
    let [Ok(seq), Ok(price), Ok(quantity)] = values else {
        json.push(b'[');
        write_i128(json, triple.seq);
        json.push(b',');
        write_i128(json, triple.price);
        json.push(b',');
        write_i128(json, triple.quantity);
        json.push(b']');
        return;
    };
    let mut text = [0u8; 3 * 20 + 4];
    text[0] = b'[';
    let mut end = put_digits(&mut text, 1, seq);
    text[end] = b',';
    end = put_digits(&mut text, end + 1, price);
    text[end] = b',';
    end = put_digits(&mut text, end + 1, quantity);
    text[end] = b']';
    json.extend_from_slice(&text[..end + 1]);
}

/// Write the decimal digits of `value` into `text` from `at`; return where they end.
#[inline(always)]
fn put_digits(text: &mut [u8], at: usize, mut value: u64) -> usize {
    let end = at + value.checked_ilog10().unwrap_or(0) as usize + 1;
    for slot in text[at..end].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    end
}

fn hex(digest: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in digest.iter().enumerate() {
        out[2 * i] = DIGITS[(byte >> 4) as usize];
        out[2 * i + 1] = DIGITS[(byte & 0xF) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [&[u8]; 4] = [b"instrument_listed", b"trade", b"deposited", b"order_accepted"];
    const T: i128 = 29_000_000 * MINUTE_NS;
    const HOUR_NS: i128 = 60 * MINUTE_NS;

    fn listing(seq: i128, symbol: &str, delivery_start: i128) -> String {
        format!(
            r#"{{"type":"instrument_listed","seq":{seq},"ts":{},"symbol":"{symbol}","gpu":"H100","region":"eu-west","delivery_start":{delivery_start}}}"#,
            T - 2 * HOUR_NS
        )
    }

    fn trade(seq: i128, ts: i128, symbol: &str, price: &str, quantity: i128) -> String {
        format!(
            r#"{{"type":"trade","seq":{seq},"ts":{ts},"instrument":"{symbol}","price":"{price}","quantity":{quantity},"maker_order_id":"m","taker_order_id":"t"}}"#
        )
    }

    fn values(records: &[String]) -> Vec<IndexValue> {
        let records: Vec<&[u8]> = records.iter().map(|record| record.as_bytes()).collect();
        let prefix_bytes = 21;
        IndexCalculator::new(&TYPES, prefix_bytes).feed(&records).expect("a log it follows")
    }

    fn sha256_hex(text: &str) -> String {
        hex(&Sha256::digest(text.as_bytes()).into()).iter().map(|&b| b as char).collect()
    }

    #[test]
    fn the_trades_hash_is_the_documented_one() {
        // docs/index-methodology.md, section 6: the window's first and last minutes hold the
        // inputs; a trade on an instrument beyond 24 hours is not one.
        let records = [
            listing(1, "H-1", T + HOUR_NS),
            listing(2, "H-2", T + 25 * HOUR_NS),
            trade(3, T - HOUR_NS, "H-1", "2.10", 3),
            trade(4, T - HOUR_NS + 1, "H-2", "2.00", 1),
            trade(5, T - HOUR_NS + 2, "H-1", "2.20", 1),
            trade(6, T - 1, "H-1", "2.30", 2),
            format!(r#"{{"type":"deposited","seq":7,"ts":{T}}}"#),
        ];
        let mut minutes = vec![sha256_hex("[]"); 60];
        minutes[0] = sha256_hex("[[3,2100000,3],[5,2200000,1]]");
        minutes[59] = sha256_hex("[[6,2300000,2]]");
        let document = format!(r#"["trades",["{}"]]"#, minutes.join(r#"",""#));
        let value = values(&records).pop().expect("the value at T");
        assert_eq!(value.minute_ns, T);
        assert_eq!((value.source, value.trade_count, value.volume), (Source::Trades, 3, 6));
        assert_eq!(value.value_micro, Some((6_300_000 + 2_200_000 + 4_600_000) / 6));
        assert_eq!(value.inputs_hash, <[u8; 32]>::from(Sha256::digest(document.as_bytes())));
    }

    #[test]
    fn without_trades_the_mid_else_none() {
        let symbol = r#"H-\"1"#; // a symbol the hash writes escaped, as msgspec does
        let order = |seq: i128, side: &str, price: &str| {
            format!(
                r#"{{"type":"order_accepted","seq":{seq},"ts":{},"order_id":"o{seq}","instrument":"{symbol}","side":"{side}","order_type":"limit","price":"{price}","quantity":1,"time_in_force":"gtc"}}"#,
                T - 2 * HOUR_NS
            )
        };
        let records = [
            listing(1, symbol, T + HOUR_NS),
            order(2, "buy", "2.00"),
            order(3, "sell", "2.03"),
            format!(r#"{{"type":"deposited","seq":4,"ts":{T}}}"#),
        ];
        let quoted = values(&records);
        assert_eq!(quoted.len(), 120); // the minutes after the listing's, to T
        let document = br#"["mid",[["H-\"1",2000000,2030000]]]"#;
        for value in quoted {
            assert_eq!((value.source, value.value_micro), (Source::Mid, Some(2_015_000)));
            assert_eq!(value.inputs_hash, <[u8; 32]>::from(Sha256::digest(document)));
        }
        let unquoted = values(&[records[0].clone(), records[3].replace(":4,", ":2,")]);
        for value in unquoted {
            assert_eq!((value.source, value.value_micro), (Source::None, None));
            assert_eq!(value.inputs_hash, <[u8; 32]>::from(Sha256::digest(br#"["none"]"#)));
        }
    }

    #[test]
    fn orders_that_never_rest_are_told_by_their_last_time_in_force() {
        assert!(never_rests(br#"{"x":"a","time_in_force":"gtc","time_in_force":"ioc"}"#));
        assert!(never_rests(br#"{"time_in_force":"fok"}"#));
        assert!(!never_rests(br#"{"time_in_force":"ioc","time_in_force":"gtd"}"#));
        assert!(!never_rests(br#"{"time_in_force":"iocx"}"#));
        assert!(!never_rests(br#"{"time_in_force":"#));
    }

    #[test]
    fn a_triple_is_written_as_msgspec_writes_it() {
        for triple in [
            Triple { seq: 1, price: 2_150_000, quantity: 10 },
            Triple { seq: u64::MAX.into(), price: 0, quantity: 9 },
            Triple { seq: -1, price: i128::from(u64::MAX) + 1, quantity: 7 },
        ] {
            let mut written = Vec::new();
            write_triple(&mut written, &triple);
            let expected = format!("[{},{},{}]", triple.seq, triple.price, triple.quantity);
            assert_eq!(written, expected.as_bytes());
        }
    }
}
