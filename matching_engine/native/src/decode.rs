//! Commands from JSON lines, with the outcome of `protocol.decode_command` for every input.
//!
//! msgspec's typed decode of `AnyCommand` (protocol/commands.py) either yields a command or
//! fails; on failure `protocol.codec._salvage` decodes the line generically and keeps the
//! well-formed fields. This module replays both on the members `json.rs` scanned:
//!
//! - the typed decode finds the first `type` member, which must be a known tag; every
//!   member must then be a field of that command (each occurrence valid, the last one
//!   kept) or another `type` equal to the tag; required fields must be present;
//! - the salvage reads the members as a dict (the last duplicate wins).

use crate::json::{Scanner, Str, Top, Val};

pub const TS_MAX: i128 = (1i128 << 63) - 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OrderType {
    Limit,
    Market,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
    Gtd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stp {
    CancelNewest,
    CancelOldest,
    CancelBoth,
    Decrement,
}

/// Who asked for a cancel (PROTOCOL.md v2, Cancel reasons): the `reason` of the
/// `order_canceled` events a `cancel_order` or `mass_cancel` makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CancelReason {
    User,
    MassCancel,
    Disconnect,
    DeadManSwitch,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::MassCancel => "mass_cancel",
            CancelReason::Disconnect => "disconnect",
            CancelReason::DeadManSwitch => "dead_man_switch",
        }
    }

    fn of(value: &[u8]) -> Option<CancelReason> {
        Some(match value {
            b"user" => CancelReason::User,
            b"mass_cancel" => CancelReason::MassCancel,
            b"disconnect" => CancelReason::Disconnect,
            b"dead_man_switch" => CancelReason::DeadManSwitch,
            _ => return None,
        })
    }
}

/// Whether `value` is a `reason` that `cancel_order` takes.
pub fn is_cancel_reason(value: &[u8]) -> bool {
    matches!(value, b"user" | b"disconnect")
}

/// Whether `value` is a `reason` that `mass_cancel` takes.
pub fn is_mass_cancel_reason(value: &[u8]) -> bool {
    matches!(value, b"mass_cancel" | b"disconnect" | b"dead_man_switch")
}

impl TimeInForce {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Gtd => "gtd",
        }
    }
}

impl Stp {
    pub fn as_str(self) -> &'static str {
        match self {
            Stp::CancelNewest => "cancel_newest",
            Stp::CancelOldest => "cancel_oldest",
            Stp::CancelBoth => "cancel_both",
            Stp::Decrement => "decrement",
        }
    }
}

/// A deposit's or withdrawal's `amount` as given: a string, or an integer (its value
/// saturated to i128, and its literal for the echo in a rejection).
#[derive(Clone, Copy, Debug)]
pub enum Amount<'a> {
    Text(&'a [u8]),
    Integer { value: i128, literal: &'a [u8] },
}

#[derive(Debug)]
pub struct NewOrder<'a> {
    pub ts: i64,
    pub account: &'a [u8],
    pub client_order_id: &'a [u8],
    pub instrument: &'a [u8],
    pub side: Side,
    pub order_type: OrderType,
    pub price: Option<&'a [u8]>,
    /// Saturated to i128: only compared with the instrument's bounds before any use.
    pub quantity: i128,
    pub time_in_force: Option<TimeInForce>,
    pub expire_at: Option<i64>,
    pub post_only: bool,
    pub stp: Stp,
}

#[derive(Debug)]
pub struct ListInstrument<'a> {
    pub ts: i64,
    pub symbol: &'a [u8],
    pub gpu: &'a [u8],
    pub region: &'a [u8],
    pub delivery_start: i64,
    pub delivery_hours: i64,
    pub tick_size: &'a [u8],
    pub max_order_quantity: i64,
    pub maker_fee_bps: i64,
    pub taker_fee_bps: i64,
}

/// What `decode_command` returns for a line: a command, or a MalformedCommand with what
/// `on_malformed` reads of it (`kind` is the type as given, "" when absent).
#[derive(Debug)]
pub enum Command<'a> {
    ListInstrument(ListInstrument<'a>),
    Deposit {
        ts: i64,
        account: &'a [u8],
        asset: &'a [u8],
        amount: Amount<'a>,
        deposit_id: Option<&'a [u8]>,
    },
    Withdraw {
        ts: i64,
        account: &'a [u8],
        asset: &'a [u8],
        amount: Amount<'a>,
    },
    NewOrder(NewOrder<'a>),
    CancelOrder {
        ts: i64,
        account: &'a [u8],
        client_order_id: &'a [u8],
        reason: CancelReason,
    },
    AmendOrder {
        ts: i64,
        account: &'a [u8],
        client_order_id: &'a [u8],
        new_price: Option<&'a [u8]>,
        new_quantity: Option<i128>,
    },
    MassCancel {
        ts: i64,
        account: &'a [u8],
        instrument: Option<&'a [u8]>,
        reason: CancelReason,
    },
    Tick {
        ts: i64,
    },
    Malformed {
        kind: &'a [u8],
        ts: Option<i64>,
        account: Option<&'a [u8]>,
        client_order_id: Option<&'a [u8]>,
        instrument: Option<&'a [u8]>,
    },
}

impl Command<'_> {
    /// The `ts` that moves the engine time (None for a malformed command without one).
    pub fn ts(&self) -> Option<i64> {
        match self {
            Command::ListInstrument(c) => Some(c.ts),
            Command::NewOrder(c) => Some(c.ts),
            Command::Deposit { ts, .. }
            | Command::Withdraw { ts, .. }
            | Command::CancelOrder { ts, .. }
            | Command::AmendOrder { ts, .. }
            | Command::MassCancel { ts, .. }
            | Command::Tick { ts } => Some(*ts),
            Command::Malformed { ts, .. } => *ts,
        }
    }
}

const MALFORMED_EMPTY: Command<'static> = Command::Malformed {
    kind: b"",
    ts: None,
    account: None,
    client_order_id: None,
    instrument: None,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    ListInstrument,
    Deposit,
    Withdraw,
    NewOrder,
    CancelOrder,
    AmendOrder,
    MassCancel,
    Tick,
}

/// The schema of one field (protocol/commands.py).
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// `Identifier`: `^[A-Za-z0-9_.:\-]{1,64}\Z`.
    Identifier,
    Str,
    /// A str of 1 to 64 characters (code points).
    ShortStr,
    OptStr,
    /// An int in the inclusive range.
    IntIn(i128, i128),
    AnyInt,
    OptInt,
    /// `Nanoseconds | None`.
    OptNanoseconds,
    /// `AmountInput`: a str, or an int in the signed 64-bit range.
    StrOrInt,
    Bool,
    Side,
    OrderType,
    OptTimeInForce,
    Stp,
    /// `CancelReason` of protocol/commands.py.
    CancelReason,
    /// `MassCancelReason` of protocol/commands.py.
    MassCancelReason,
}

const NS: Kind = Kind::IntIn(0, TS_MAX);

/// Fields per command, in declaration order; `required` as in the Struct.
pub(crate) struct Field {
    pub(crate) name: &'static [u8],
    pub(crate) kind: Kind,
    pub(crate) required: bool,
}

const fn req(name: &'static [u8], kind: Kind) -> Field {
    Field { name, kind, required: true }
}

const fn opt(name: &'static [u8], kind: Kind) -> Field {
    Field { name, kind, required: false }
}

const LIST_INSTRUMENT: &[Field] = &[
    req(b"ts", NS),
    req(b"symbol", Kind::Identifier),
    req(b"gpu", Kind::ShortStr),
    req(b"region", Kind::ShortStr),
    req(b"delivery_start", NS),
    req(b"delivery_hours", Kind::IntIn(1, 24 * 366)),
    req(b"tick_size", Kind::Str),
    req(b"max_order_quantity", Kind::IntIn(1, 1_000_000_000)),
    req(b"maker_fee_bps", NS),
    req(b"taker_fee_bps", NS),
];
const DEPOSIT: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"asset", Kind::Str),
    req(b"amount", Kind::StrOrInt),
    opt(b"deposit_id", Kind::OptStr),
];
const WITHDRAW: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"asset", Kind::Str),
    req(b"amount", Kind::StrOrInt),
];
const NEW_ORDER: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"client_order_id", Kind::Identifier),
    req(b"instrument", Kind::Str),
    req(b"side", Kind::Side),
    req(b"order_type", Kind::OrderType),
    opt(b"price", Kind::OptStr),
    req(b"quantity", Kind::AnyInt),
    opt(b"time_in_force", Kind::OptTimeInForce),
    opt(b"expire_at", Kind::OptNanoseconds),
    opt(b"post_only", Kind::Bool),
    opt(b"stp", Kind::Stp),
];
const CANCEL_ORDER: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"client_order_id", Kind::Identifier),
    opt(b"reason", Kind::CancelReason),
];
const AMEND_ORDER: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"client_order_id", Kind::Identifier),
    opt(b"new_price", Kind::OptStr),
    opt(b"new_quantity", Kind::OptInt),
];
const MASS_CANCEL: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    opt(b"instrument", Kind::OptStr),
    opt(b"reason", Kind::MassCancelReason),
];
const TICK: &[Field] = &[req(b"ts", NS)];

pub(crate) const FIELDS_MAX: usize = 12;

pub(crate) fn tag_of(name: &[u8]) -> Option<Tag> {
    Some(match name {
        b"list_instrument" => Tag::ListInstrument,
        b"deposit" => Tag::Deposit,
        b"withdraw" => Tag::Withdraw,
        b"new_order" => Tag::NewOrder,
        b"cancel_order" => Tag::CancelOrder,
        b"amend_order" => Tag::AmendOrder,
        b"mass_cancel" => Tag::MassCancel,
        b"tick" => Tag::Tick,
        _ => return None,
    })
}

pub(crate) fn fields_of(tag: Tag) -> &'static [Field] {
    match tag {
        Tag::ListInstrument => LIST_INSTRUMENT,
        Tag::Deposit => DEPOSIT,
        Tag::Withdraw => WITHDRAW,
        Tag::NewOrder => NEW_ORDER,
        Tag::CancelOrder => CANCEL_ORDER,
        Tag::AmendOrder => AMEND_ORDER,
        Tag::MassCancel => MASS_CANCEL,
        Tag::Tick => TICK,
    }
}

/// The bytes of `[A-Za-z0-9_.:\-]`.
const IDENTIFIER_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b':' || c == b'-';
        b += 1;
    }
    table
};

/// Whether `value` matches the identifier pattern.
#[inline]
pub fn is_identifier(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 64 && value.iter().all(|&b| IDENTIFIER_BYTES[b as usize])
}

/// Byte-slice equality for short slices, without a call to memcmp.
#[inline(always)]
pub fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        a.iter().zip(b).all(|(x, y)| x == y)
    }
}

fn char_count(utf8: &[u8]) -> usize {
    utf8.iter().filter(|&&b| b & 0xC0 != 0x80).count()
}

/// A decoder with its scanner's buffers, reused line after line.
#[derive(Default)]
pub struct Decoder {
    pub scanner: Scanner,
}

/// The decoded members of one line, for reading field values.
struct Members<'a> {
    line: &'a [u8],
    scanner: &'a Scanner,
}

impl<'a> Members<'a> {
    fn bytes(&self, s: Str) -> &'a [u8] {
        self.scanner.bytes(self.line, s)
    }

    fn valid(&self, kind: Kind, value: &Val) -> bool {
        match (kind, value) {
            (Kind::Identifier, Val::Str(s)) => is_identifier(self.bytes(*s)),
            (Kind::Str | Kind::OptStr | Kind::StrOrInt, Val::Str(_)) => true,
            (Kind::ShortStr, Val::Str(s)) => (1..=64).contains(&char_count(self.bytes(*s))),
            (
                Kind::OptStr | Kind::OptInt | Kind::OptNanoseconds | Kind::OptTimeInForce,
                Val::Null,
            ) => true,
            (Kind::IntIn(lo, hi), Val::Int(i)) => (lo..=hi).contains(&i.value(self.line)),
            (Kind::OptNanoseconds, Val::Int(i)) => (0..=TS_MAX).contains(&i.value(self.line)),
            (Kind::AnyInt | Kind::OptInt, Val::Int(_)) => true,
            (Kind::StrOrInt, Val::Int(i)) => (-(TS_MAX + 1)..=TS_MAX).contains(&i.value(self.line)),
            (Kind::Bool, Val::Bool(_)) => true,
            (Kind::Side, Val::Str(s)) => matches!(self.bytes(*s), b"buy" | b"sell"),
            (Kind::OrderType, Val::Str(s)) => matches!(self.bytes(*s), b"limit" | b"market"),
            (Kind::OptTimeInForce, Val::Str(s)) => {
                matches!(self.bytes(*s), b"gtc" | b"ioc" | b"fok" | b"gtd")
            }
            (Kind::CancelReason, Val::Str(s)) => is_cancel_reason(self.bytes(*s)),
            (Kind::MassCancelReason, Val::Str(s)) => is_mass_cancel_reason(self.bytes(*s)),
            (Kind::Stp, Val::Str(s)) => matches!(
                self.bytes(*s),
                b"cancel_newest" | b"cancel_oldest" | b"cancel_both" | b"decrement"
            ),
            _ => false,
        }
    }
}

impl Decoder {
    /// Decode one line (without its trailing CR/LF) as `protocol.decode_command` does.
    pub fn decode<'a>(&'a mut self, line: &'a [u8]) -> Command<'a> {
        if let Some(command) = crate::fast::decode(line) {
            return command;
        }
        match self.scanner.scan(line) {
            Top::Invalid | Top::NotObject => return MALFORMED_EMPTY,
            Top::Object => {}
        }
        let members = Members { line, scanner: &self.scanner };
        match typed(&members) {
            Some(command) => command,
            None => salvage(&members),
        }
    }
}

/// msgspec's typed decode; None when it would raise.
fn typed<'a>(members: &Members<'a>) -> Option<Command<'a>> {
    let pairs = &members.scanner.members;
    let tag_value = pairs.iter().find(|(key, _)| eq_bytes(members.bytes(*key), b"type"))?.1;
    let Val::Str(tag_str) = tag_value else { return None };
    let tag_name = members.bytes(tag_str);
    let tag = tag_of(tag_name)?;
    let fields = fields_of(tag);
    let mut last: [Option<Val>; FIELDS_MAX] = [None; FIELDS_MAX];
    // Encoders write the fields in declaration order: try the next one first.
    let mut expected = 0;
    for (key, value) in pairs {
        let key = members.bytes(*key);
        if eq_bytes(key, b"type") {
            match value {
                Val::Str(s) if eq_bytes(members.bytes(*s), tag_name) => continue,
                _ => return None,
            }
        }
        let index = match fields.get(expected) {
            Some(field) if eq_bytes(field.name, key) => expected,
            _ => fields.iter().position(|f| eq_bytes(f.name, key))?,
        };
        expected = index + 1;
        if !members.valid(fields[index].kind, value) {
            return None;
        }
        last[index] = Some(*value);
    }
    if fields.iter().zip(&last).any(|(f, v)| f.required && v.is_none()) {
        return None;
    }
    Some(build(&Decoded { members, last: &last }, tag))
}

/// The last valid value of each field of a command, however it was decoded.
pub(crate) trait FieldValues<'a> {
    fn text(&self, field: usize) -> Option<&'a [u8]>;
    /// An integer's value (saturated) and literal.
    fn integer(&self, field: usize) -> Option<(i128, &'a [u8])>;
    fn boolean(&self, field: usize) -> Option<bool>;
}

struct Decoded<'m, 'a> {
    members: &'m Members<'a>,
    last: &'m [Option<Val>; FIELDS_MAX],
}

impl<'a> FieldValues<'a> for Decoded<'_, 'a> {
    fn text(&self, field: usize) -> Option<&'a [u8]> {
        match self.last[field] {
            Some(Val::Str(s)) => Some(self.members.bytes(s)),
            _ => None,
        }
    }

    fn integer(&self, field: usize) -> Option<(i128, &'a [u8])> {
        match self.last[field] {
            Some(Val::Int(int)) => {
                Some((int.value(self.members.line), int.literal(self.members.line)))
            }
            _ => None,
        }
    }

    fn boolean(&self, field: usize) -> Option<bool> {
        match self.last[field] {
            Some(Val::Bool(b)) => Some(b),
            _ => None,
        }
    }
}

/// Build a command from the last valid value of each field (all required ones present).
pub(crate) fn build<'a>(values: &impl FieldValues<'a>, tag: Tag) -> Command<'a> {
    let s = |i: usize| values.text(i).expect("validated as a str");
    let opt_s = |i: usize| values.text(i);
    let int = |i: usize| values.integer(i).expect("validated as an int").0;
    let opt_int = |i: usize| values.integer(i).map(|(value, _)| value);
    let amount = |i: usize| match values.text(i) {
        Some(text) => Amount::Text(text),
        None => {
            let (value, literal) = values.integer(i).expect("validated as a str or an int");
            Amount::Integer { value, literal }
        }
    };
    let ts = int(0) as i64;
    match tag {
        Tag::ListInstrument => Command::ListInstrument(ListInstrument {
            ts,
            symbol: s(1),
            gpu: s(2),
            region: s(3),
            delivery_start: int(4) as i64,
            delivery_hours: int(5) as i64,
            tick_size: s(6),
            max_order_quantity: int(7) as i64,
            maker_fee_bps: int(8) as i64,
            taker_fee_bps: int(9) as i64,
        }),
        Tag::Deposit => Command::Deposit {
            ts,
            account: s(1),
            asset: s(2),
            amount: amount(3),
            deposit_id: opt_s(4),
        },
        Tag::Withdraw => Command::Withdraw { ts, account: s(1), asset: s(2), amount: amount(3) },
        Tag::NewOrder => Command::NewOrder(NewOrder {
            ts,
            account: s(1),
            client_order_id: s(2),
            instrument: s(3),
            side: if s(4) == b"buy" { Side::Buy } else { Side::Sell },
            order_type: if s(5) == b"limit" { OrderType::Limit } else { OrderType::Market },
            price: opt_s(6),
            quantity: int(7),
            time_in_force: opt_s(8).map(|t| match t {
                b"gtc" => TimeInForce::Gtc,
                b"ioc" => TimeInForce::Ioc,
                b"fok" => TimeInForce::Fok,
                _ => TimeInForce::Gtd,
            }),
            expire_at: opt_int(9).map(|v| v as i64),
            post_only: values.boolean(10).unwrap_or(false),
            stp: match opt_s(11) {
                None | Some(b"cancel_newest") => Stp::CancelNewest,
                Some(b"cancel_oldest") => Stp::CancelOldest,
                Some(b"cancel_both") => Stp::CancelBoth,
                Some(_) => Stp::Decrement,
            },
        }),
        Tag::CancelOrder => Command::CancelOrder {
            ts,
            account: s(1),
            client_order_id: s(2),
            reason: opt_s(3).and_then(CancelReason::of).unwrap_or(CancelReason::User),
        },
        Tag::AmendOrder => Command::AmendOrder {
            ts,
            account: s(1),
            client_order_id: s(2),
            new_price: opt_s(3),
            new_quantity: opt_int(4),
        },
        Tag::MassCancel => Command::MassCancel {
            ts,
            account: s(1),
            instrument: opt_s(2),
            reason: opt_s(3).and_then(CancelReason::of).unwrap_or(CancelReason::MassCancel),
        },
        Tag::Tick => Command::Tick { ts },
    }
}

/// `protocol.codec._salvage` on a JSON object: its members as a dict, the last one wins.
fn salvage<'a>(members: &Members<'a>) -> Command<'a> {
    let mut kind: &'a [u8] = b"";
    let mut ts = None;
    let mut account = None;
    let mut client_order_id = None;
    let mut instrument = None;
    for (key, value) in &members.scanner.members {
        let as_str = match value {
            Val::Str(s) => Some(members.bytes(*s)),
            _ => None,
        };
        match members.bytes(*key) {
            b"type" => kind = as_str.unwrap_or(b""),
            b"ts" => {
                ts = match value {
                    Val::Int(i) if (0..=TS_MAX).contains(&i.value(members.line)) => {
                        Some(i.value(members.line) as i64)
                    }
                    _ => None,
                }
            }
            b"account" => account = as_str.filter(|s| is_identifier(s)),
            b"client_order_id" => client_order_id = as_str.filter(|s| is_identifier(s)),
            b"instrument" => instrument = as_str,
            _ => {}
        }
    }
    Command::Malformed { kind, ts, account, client_order_id, instrument }
}
