//! Commands as the engine reads them: what `protocol.decode_command` yields for a line (a
//! command of protocol/commands.py, or a MalformedCommand with what `on_malformed` reads).

pub const TS_MAX: i128 = (1i128 << 63) - 1;
/// `delivered_ppm` of a whole delivery; `evidence` holds at most this many characters.
pub const PPM: i128 = 1_000_000;
pub const EVIDENCE_CHARS_MAX: usize = 128;
/// v2, Strip orders: a strip's legs, and the length of its client order id, so that a
/// leg's `CLIENT_ORDER_ID:LEG_INDEX` fits in an identifier's 64 characters.
pub const STRIP_LEGS_MIN: usize = 2;
pub const STRIP_LEGS_MAX: usize = 168;
pub const STRIP_CLIENT_ORDER_ID_CHARS_MAX: usize = 59;

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

    pub fn named(value: &[u8]) -> Option<CancelReason> {
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

    pub fn named(value: &[u8]) -> Option<TimeInForce> {
        Some(match value {
            b"gtc" => TimeInForce::Gtc,
            b"ioc" => TimeInForce::Ioc,
            b"fok" => TimeInForce::Fok,
            b"gtd" => TimeInForce::Gtd,
            _ => return None,
        })
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

    pub fn named(value: &[u8]) -> Option<Stp> {
        Some(match value {
            b"cancel_newest" => Stp::CancelNewest,
            b"cancel_oldest" => Stp::CancelOldest,
            b"cancel_both" => Stp::CancelBoth,
            b"decrement" => Stp::Decrement,
            _ => return None,
        })
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
    /// v2, Delivery: the bond per GPU-hour as given; None for a v1 (not deliverable) listing.
    pub bond_per_gpu_hour: Option<&'a [u8]>,
}

/// v2, Delivery: an operator bonds `quantity` GPU-hours of a node and gets their tokens.
#[derive(Debug)]
pub struct IssueCapacity<'a> {
    pub ts: i64,
    pub account: &'a [u8],
    pub issue_id: &'a [u8],
    pub instrument: &'a [u8],
    pub node_id: &'a [u8],
    /// Saturated to i128: only compared with the instrument's bounds before any use.
    pub quantity: i128,
}

/// v2, Delivery: the delivery service's measure of one assignment (issue, holder).
#[derive(Debug)]
pub struct DeliveryReport<'a> {
    pub ts: i64,
    pub issue_id: &'a [u8],
    pub holder: &'a [u8],
    /// A signed 64-bit integer; only compared with 0..=PPM before any use.
    pub delivered_ppm: i128,
    pub evidence: Option<&'a [u8]>,
}

/// v2, Strip orders: `quantity` GPU-hours in each leg, all or nothing, at a total limit.
#[derive(Debug)]
pub struct NewStripOrder<'a> {
    pub ts: i64,
    pub account: &'a [u8],
    pub client_order_id: &'a [u8],
    pub side: Side,
    /// The legs as given (any strings; the engine checks them).
    pub instruments: Vec<&'a [u8]>,
    /// Saturated to i128: only compared with the legs' bounds before any use.
    pub quantity: i128,
    pub limit_total: &'a [u8],
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
    IssueCapacity(IssueCapacity<'a>),
    DeliveryReport(DeliveryReport<'a>),
    NewStripOrder(NewStripOrder<'a>),
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
            Command::IssueCapacity(c) => Some(c.ts),
            Command::DeliveryReport(c) => Some(c.ts),
            Command::NewStripOrder(c) => Some(c.ts),
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
