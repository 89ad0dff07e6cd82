//! Events as msgspec encodes them (`protocol.encode`): `{"type":...,"seq":...,"ts":...}`
//! then the fields in declaration order, optional fields left out when None, no spaces,
//! strings escaped as msgspec does (`"`, `\`, and control characters; `\b \t \n \f \r`
//! short, the rest `\u00xx` in lowercase hex; DEL and non-ASCII as they are).

use crate::money::{write_i128, write_micro};

/// Per byte: 0 when it goes out as it is, else the letter after the backslash.
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};
const HEX: &[u8; 16] = b"0123456789abcdef";

/// JSON Lines of events being written; `begin` ... fields ... `end` makes one line.
///
/// Every field reserves room for itself once, then copies without further checks: keys are
/// constants at each call site, so their copies compile to a few moves.
#[derive(Default)]
pub struct EventWriter {
    pub out: Vec<u8>,
}

/// Room for a key's punctuation and an integer or id value.
const FIELD_BYTES_MAX: usize = 64;

impl EventWriter {
    /// Append `bytes`; the caller has reserved room for them.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let len = self.out.len();
        debug_assert!(self.out.capacity() - len >= bytes.len());
        // SAFETY: room for `bytes` was reserved by the caller (`key`, `begin`, `str`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.out.as_mut_ptr().add(len),
                bytes.len(),
            );
            self.out.set_len(len + bytes.len());
        }
    }

    /// Append the decimal digits of `value`; room for 20 bytes was reserved.
    #[inline(always)]
    fn put_u64(&mut self, value: u64) {
        let mut buf = [0u8; 20];
        let start = crate::money::format_u64(&mut buf, value);
        self.put(&buf[start..]);
    }

    #[inline(always)]
    pub fn begin(&mut self, event_type: &str, seq: u64, ts: i64) {
        self.out.reserve(event_type.len() + 2 * FIELD_BYTES_MAX);
        self.put(b"{\"type\":\"");
        self.put(event_type.as_bytes());
        self.put(b"\",\"seq\":");
        self.put_u64(seq);
        self.put(b",\"ts\":");
        if ts < 0 {
            self.put(b"-");
        }
        self.put_u64(ts.unsigned_abs());
    }

    #[inline(always)]
    pub fn end(&mut self) {
        self.out.reserve(2);
        self.put(b"}\n");
    }

    /// `,"name":`, with room reserved for it and `value_bytes` more.
    #[inline(always)]
    fn key(&mut self, name: &str, value_bytes: usize) {
        self.out.reserve(name.len() + value_bytes + 8);
        self.put(b",\"");
        self.put(name.as_bytes());
        self.put(b"\":");
    }

    /// A string field whose value may need escaping (anything that came from input).
    #[inline]
    pub fn str(&mut self, name: &str, value: &[u8]) {
        self.key(name, 0);
        write_json_str(&mut self.out, value);
    }

    /// A string field known to need no escaping (identifiers, enumerations, numbers).
    #[inline(always)]
    pub fn plain(&mut self, name: &str, value: &[u8]) {
        self.key(name, value.len() + 2);
        self.put(b"\"");
        self.put(value);
        self.put(b"\"");
    }

    /// A list of strings known to need no escaping (listed symbols).
    pub fn plain_list<'v>(&mut self, name: &str, values: impl IntoIterator<Item = &'v [u8]>) {
        self.key(name, 1);
        self.put(b"[");
        for (index, value) in values.into_iter().enumerate() {
            self.out.reserve(value.len() + 3);
            if index > 0 {
                self.put(b",");
            }
            self.put(b"\"");
            self.put(value);
            self.put(b"\"");
        }
        self.out.reserve(1);
        self.put(b"]");
    }

    /// A decimal id string such as `order_id` and `trade_id`.
    #[inline(always)]
    pub fn id(&mut self, name: &str, value: u64) {
        self.key(name, FIELD_BYTES_MAX);
        self.put(b"\"");
        self.put_u64(value);
        self.put(b"\"");
    }

    #[inline(always)]
    pub fn int(&mut self, name: &str, value: i128) {
        match u64::try_from(value) {
            Ok(small) => {
                self.key(name, FIELD_BYTES_MAX);
                self.put_u64(small);
            }
            Err(_) => {
                self.key(name, 0);
                write_i128(&mut self.out, value);
            }
        }
    }

    /// An integer given by its JSON literal (a big one stays exact); `-0` is `0`.
    pub fn int_literal(&mut self, name: &str, literal: &[u8]) {
        self.key(name, literal.len());
        if literal == b"-0" {
            self.put(b"0");
        } else {
            self.put(literal);
        }
    }

    #[inline(always)]
    pub fn micro(&mut self, name: &str, value: i128) {
        match u64::try_from(value) {
            Ok(small) => {
                self.key(name, FIELD_BYTES_MAX);
                let mut buf = [0u8; 32];
                let start = crate::money::format_micro_u64(&mut buf, small);
                self.put(b"\"");
                self.put(&buf[start..]);
                self.put(b"\"");
            }
            Err(_) => {
                self.key(name, 0);
                self.out.push(b'"');
                write_micro(&mut self.out, value);
                self.out.push(b'"');
            }
        }
    }

    #[inline(always)]
    pub fn bool(&mut self, name: &str, value: bool) {
        self.key(name, 5);
        self.put(if value { b"true" } else { b"false" });
    }
}

/// Write `value` (valid UTF-8) as a JSON string the way msgspec does.
pub fn write_json_str(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in value.iter().enumerate() {
        let escape = ESCAPES[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&value[start..i]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(&[b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xF) as usize]]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&value[start..]);
    out.push(b'"');
}
