//! The common case in one pass: a compact line as `protocol.encode` writes it (`type`
//! first, no whitespace, plain ASCII strings, small non-negative integers) that is a valid
//! command. Anything else, including every invalid command, returns None and takes the
//! general path (`decode.rs`), so this only ever accepts lines msgspec's typed decode accepts,
//! with the same values.

use crate::command::{
    is_cancel_reason, is_mass_cancel_reason, Command, Stp, TimeInForce, EVIDENCE_CHARS_MAX, TS_MAX,
};
use crate::decode::{build, FieldValues};
use crate::json::special_bytes;
use crate::schema::{
    eq_bytes, fields_of, is_identifier, is_strip_client_order_id, tag_of, Kind, FIELDS_MAX,
};

#[derive(Clone, Copy)]
enum Value<'a> {
    Text(&'a [u8]),
    Integer(i128, &'a [u8]),
    Bool(bool),
    Null,
    /// An array of plain strings, as the text between its brackets: `"A","B"`.
    Texts(&'a [u8]),
}

struct Values<'a>([Option<Value<'a>>; FIELDS_MAX]);

impl<'a> FieldValues<'a> for Values<'a> {
    fn text(&self, field: usize) -> Option<&'a [u8]> {
        match self.0[field] {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }

    fn integer(&self, field: usize) -> Option<(i128, &'a [u8])> {
        match self.0[field] {
            Some(Value::Integer(value, literal)) => Some((value, literal)),
            _ => None,
        }
    }

    fn boolean(&self, field: usize) -> Option<bool> {
        match self.0[field] {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }

    fn texts(&self, field: usize) -> Option<Vec<&'a [u8]>> {
        let Some(Value::Texts(inner)) = self.0[field] else { return None };
        // Plain strings hold no `"`: the quotes pair up, each pair around one string.
        let mut quotes = memchr::memchr_iter(b'"', inner);
        let mut texts = Vec::new();
        while let (Some(open), Some(close)) = (quotes.next(), quotes.next()) {
            texts.push(&inner[open + 1..close]);
        }
        Some(texts)
    }
}

struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        if self.line.get(self.pos..self.pos + expected.len())? == expected {
            self.pos += expected.len();
            Some(())
        } else {
            None
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.line.get(self.pos).copied()
    }

    /// A string of plain printable ASCII without escapes.
    #[inline(always)]
    fn text(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let mut pos = start;
        while let Some(chunk) = self.line.get(pos..pos + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if special == 0 {
                pos += 8;
                continue;
            }
            pos += (special.trailing_zeros() / 8) as usize;
            if self.line[pos] == b'"' {
                self.pos = pos + 1;
                return Some(&self.line[start..pos]);
            }
            return None;
        }
        loop {
            let b = *self.line.get(pos)?;
            if b == b'"' {
                self.pos = pos + 1;
                return Some(&self.line[start..pos]);
            }
            if b == b'\\' || !(0x20..0x80).contains(&b) {
                return None;
            }
            pos += 1;
        }
    }

    /// A non-negative integer of at most 18 digits, not the start of a float.
    #[inline(always)]
    fn integer(&mut self) -> Option<(i128, &'a [u8])> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            value = value * 10 + u64::from(d - b'0');
            self.pos += 1;
            if self.pos - start > 18 {
                return None;
            }
        }
        let digits = &self.line[start..self.pos];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some((i128::from(value), digits))
    }

    /// An array of plain strings; the text between its brackets.
    fn texts(&mut self) -> Option<&'a [u8]> {
        self.literal(b"[")?;
        let start = self.pos;
        if self.peek()? != b']' {
            loop {
                self.text()?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        let inner = &self.line[start..self.pos];
        self.pos += 1;
        Some(inner)
    }

    #[inline(always)]
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    fn value(&mut self, kind: Kind) -> Option<Value<'a>> {
        let text = |c: &mut Self| c.text().map(Value::Text);
        let integer = |c: &mut Self| c.integer().map(|(v, l)| Value::Integer(v, l));
        match kind {
            Kind::Identifier => self.text().filter(|t| is_identifier(t)).map(Value::Text),
            Kind::StripClientOrderId => {
                self.text().filter(|t| is_strip_client_order_id(t)).map(Value::Text)
            }
            Kind::Str => text(self),
            Kind::StrList => self.texts().map(Value::Texts),
            Kind::ShortStr => self.text().filter(|t| (1..=64).contains(&t.len())).map(Value::Text),
            Kind::OptStr => {
                if self.null() {
                    Some(Value::Null)
                } else {
                    text(self)
                }
            }
            Kind::IntIn(lo, hi) => self
                .integer()
                .filter(|(v, _)| (lo..=hi).contains(v))
                .map(|(v, l)| Value::Integer(v, l)),
            Kind::AnyInt => integer(self),
            Kind::OptInt => {
                if self.null() {
                    Some(Value::Null)
                } else {
                    integer(self)
                }
            }
            Kind::OptNanoseconds => {
                if self.null() {
                    Some(Value::Null)
                } else {
                    self.integer().filter(|(v, _)| *v <= TS_MAX).map(|(v, l)| Value::Integer(v, l))
                }
            }
            Kind::StrOrInt => {
                if self.peek()? == b'"' {
                    text(self)
                } else {
                    integer(self)
                }
            }
            Kind::Bool => {
                if self.literal(b"true").is_some() {
                    Some(Value::Bool(true))
                } else {
                    self.literal(b"false").map(|_| Value::Bool(false))
                }
            }
            Kind::Side => self.text().filter(|t| matches!(*t, b"buy" | b"sell")).map(Value::Text),
            Kind::OrderType => {
                self.text().filter(|t| matches!(*t, b"limit" | b"market")).map(Value::Text)
            }
            Kind::OptTimeInForce => {
                if self.null() {
                    return Some(Value::Null);
                }
                self.text().filter(|t| TimeInForce::named(t).is_some()).map(Value::Text)
            }
            Kind::CancelReason => self.text().filter(|t| is_cancel_reason(t)).map(Value::Text),
            Kind::MassCancelReason => {
                self.text().filter(|t| is_mass_cancel_reason(t)).map(Value::Text)
            }
            Kind::Stp => self.text().filter(|t| Stp::named(t).is_some()).map(Value::Text),
            Kind::Evidence => {
                if self.null() {
                    return Some(Value::Null);
                }
                // Plain ASCII here: a byte is a character.
                self.text().filter(|t| t.len() <= EVIDENCE_CHARS_MAX).map(Value::Text)
            }
        }
    }
}

pub fn decode(line: &[u8]) -> Option<Command<'_>> {
    let mut cursor = Cursor { line, pos: 0 };
    cursor.literal(b"{\"type\":")?;
    let tag = tag_of(cursor.text()?)?;
    let fields = fields_of(tag);
    let mut values = Values([None; FIELDS_MAX]);
    let mut expected = 0;
    loop {
        match cursor.peek()? {
            b'}' => break,
            b',' => cursor.pos += 1,
            _ => return None,
        }
        let key = cursor.text()?;
        cursor.literal(b":")?;
        let index = match fields.get(expected) {
            Some(field) if eq_bytes(field.name, key) => expected,
            _ => fields.iter().position(|f| eq_bytes(f.name, key))?,
        };
        values.0[index] = Some(cursor.value(fields[index].kind)?);
        expected = index + 1;
    }
    if cursor.pos + 1 != line.len() {
        return None;
    }
    if fields.iter().zip(&values.0).any(|(f, v)| f.required && v.is_none()) {
        return None;
    }
    // A null optional field is absent: keep None rather than a Null value.
    for value in values.0.iter_mut() {
        if matches!(value, Some(Value::Null)) {
            *value = None;
        }
    }
    Some(build(&values, tag))
}
