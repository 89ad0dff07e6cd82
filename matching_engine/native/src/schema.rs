//! The schema of each command (protocol/commands.py): its tag, its fields in declaration
//! order, which are required and what values each takes. `decode.rs` and `fast.rs` both
//! decode by it.

use crate::command::{STRIP_CLIENT_ORDER_ID_CHARS_MAX, TS_MAX};

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
    IssueCapacity,
    DeliveryReport,
    NewStripOrder,
}

/// The schema of one field (protocol/commands.py).
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// `Identifier`: `^[A-Za-z0-9_.:\-]{1,64}\Z`.
    Identifier,
    /// `StripClientOrderId`: an identifier of at most 59 characters.
    StripClientOrderId,
    Str,
    /// `list[str]`: an array of strings, any number of them.
    StrList,
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
    /// `delivery_report.evidence`: None, or a str of at most EVIDENCE_CHARS_MAX characters.
    Evidence,
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
    opt(b"bond_per_gpu_hour", Kind::OptStr),
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
const ISSUE_CAPACITY: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"issue_id", Kind::Identifier),
    req(b"instrument", Kind::Str),
    req(b"node_id", Kind::Identifier),
    req(b"quantity", Kind::AnyInt),
];
const DELIVERY_REPORT: &[Field] = &[
    req(b"ts", NS),
    req(b"issue_id", Kind::Identifier),
    req(b"holder", Kind::Identifier),
    req(b"delivered_ppm", Kind::IntIn(-(TS_MAX + 1), TS_MAX)),
    opt(b"evidence", Kind::Evidence),
];
const NEW_STRIP_ORDER: &[Field] = &[
    req(b"ts", NS),
    req(b"account", Kind::Identifier),
    req(b"client_order_id", Kind::StripClientOrderId),
    req(b"side", Kind::Side),
    req(b"instruments", Kind::StrList),
    req(b"quantity", Kind::AnyInt),
    req(b"limit_total", Kind::Str),
];

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
        b"issue_capacity" => Tag::IssueCapacity,
        b"delivery_report" => Tag::DeliveryReport,
        b"new_strip_order" => Tag::NewStripOrder,
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
        Tag::IssueCapacity => ISSUE_CAPACITY,
        Tag::DeliveryReport => DELIVERY_REPORT,
        Tag::NewStripOrder => NEW_STRIP_ORDER,
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

/// Whether `value` matches the pattern of a strip's client order id.
#[inline]
pub fn is_strip_client_order_id(value: &[u8]) -> bool {
    is_identifier(value) && value.len() <= STRIP_CLIENT_ORDER_ID_CHARS_MAX
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
