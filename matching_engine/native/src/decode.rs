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

use crate::command::{
    is_cancel_reason, is_mass_cancel_reason, Amount, CancelReason, Command, DeliveryReport,
    IssueCapacity, ListInstrument, NewOrder, NewStripOrder, OrderType, Side, Stp, TimeInForce,
    EVIDENCE_CHARS_MAX, TS_MAX,
};
use crate::json::{Scanner, Str, Top, Val};
use crate::schema::{
    eq_bytes, fields_of, is_identifier, is_strip_client_order_id, tag_of, Kind, Tag, FIELDS_MAX,
};

const MALFORMED_EMPTY: Command<'static> = Command::Malformed {
    kind: b"",
    ts: None,
    account: None,
    client_order_id: None,
    instrument: None,
};

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
            (Kind::StripClientOrderId, Val::Str(s)) => is_strip_client_order_id(self.bytes(*s)),
            (Kind::StrList, Val::Array(elements)) => {
                self.scanner.elements(*elements).iter().all(|v| matches!(v, Val::Str(_)))
            }
            (Kind::Str | Kind::OptStr | Kind::StrOrInt, Val::Str(_)) => true,
            (Kind::ShortStr, Val::Str(s)) => (1..=64).contains(&char_count(self.bytes(*s))),
            (Kind::Evidence, Val::Str(s)) => char_count(self.bytes(*s)) <= EVIDENCE_CHARS_MAX,
            (
                Kind::OptStr
                | Kind::OptInt
                | Kind::OptNanoseconds
                | Kind::OptTimeInForce
                | Kind::Evidence,
                Val::Null,
            ) => true,
            (Kind::IntIn(lo, hi), Val::Int(i)) => (lo..=hi).contains(&i.value(self.line)),
            (Kind::OptNanoseconds, Val::Int(i)) => (0..=TS_MAX).contains(&i.value(self.line)),
            (Kind::AnyInt | Kind::OptInt, Val::Int(_)) => true,
            (Kind::StrOrInt, Val::Int(i)) => (-(TS_MAX + 1)..=TS_MAX).contains(&i.value(self.line)),
            (Kind::Bool, Val::Bool(_)) => true,
            (Kind::Side, Val::Str(s)) => matches!(self.bytes(*s), b"buy" | b"sell"),
            (Kind::OrderType, Val::Str(s)) => matches!(self.bytes(*s), b"limit" | b"market"),
            (Kind::OptTimeInForce, Val::Str(s)) => TimeInForce::named(self.bytes(*s)).is_some(),
            (Kind::CancelReason, Val::Str(s)) => is_cancel_reason(self.bytes(*s)),
            (Kind::MassCancelReason, Val::Str(s)) => is_mass_cancel_reason(self.bytes(*s)),
            (Kind::Stp, Val::Str(s)) => Stp::named(self.bytes(*s)).is_some(),
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
    /// The strings of a `list[str]`, in order.
    fn texts(&self, field: usize) -> Option<Vec<&'a [u8]>>;
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

    fn texts(&self, field: usize) -> Option<Vec<&'a [u8]>> {
        let Some(Val::Array(elements)) = self.last[field] else { return None };
        let text = |value: &Val| match value {
            Val::Str(s) => self.members.bytes(*s),
            _ => unreachable!("validated as a list of str"),
        };
        Some(self.members.scanner.elements(elements).iter().map(text).collect())
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
            bond_per_gpu_hour: opt_s(10),
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
            time_in_force: opt_s(8).and_then(TimeInForce::named),
            expire_at: opt_int(9).map(|v| v as i64),
            post_only: values.boolean(10).unwrap_or(false),
            stp: opt_s(11).and_then(Stp::named).unwrap_or(Stp::CancelNewest),
        }),
        Tag::CancelOrder => Command::CancelOrder {
            ts,
            account: s(1),
            client_order_id: s(2),
            reason: opt_s(3).and_then(CancelReason::named).unwrap_or(CancelReason::User),
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
            reason: opt_s(3).and_then(CancelReason::named).unwrap_or(CancelReason::MassCancel),
        },
        Tag::Tick => Command::Tick { ts },
        Tag::IssueCapacity => Command::IssueCapacity(IssueCapacity {
            ts,
            account: s(1),
            issue_id: s(2),
            instrument: s(3),
            node_id: s(4),
            quantity: int(5),
        }),
        Tag::DeliveryReport => Command::DeliveryReport(DeliveryReport {
            ts,
            issue_id: s(1),
            holder: s(2),
            delivered_ppm: int(3),
            evidence: opt_s(4),
        }),
        Tag::NewStripOrder => Command::NewStripOrder(NewStripOrder {
            ts,
            account: s(1),
            client_order_id: s(2),
            side: if s(3) == b"buy" { Side::Buy } else { Side::Sell },
            instruments: values.texts(4).expect("validated as a list of str"),
            quantity: int(5),
            limit_total: s(6),
        }),
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
