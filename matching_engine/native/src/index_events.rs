//! What the index reads of an event record, read exactly as msgspec decodes a record into
//! one of `index/events.py`'s structs, so a record the Python calculator refuses is refused
//! here and one it reads gives the same values.
//!
//! msgspec's typed decode of a struct, reproduced: the record is one JSON object (whitespace
//! around it only: space, tab, LF, CR); each member whose key (escapes decoded) names a field
//! is decoded as that field's type, the last occurrence kept, and every other member's value
//! is skipped. The two read differently:
//!
//! - a decoded string (a key, a field) refuses raw control characters, bad escapes and lone
//!   UTF-16 surrogates; a `str` field's bytes must be UTF-8 too (a key's need not be: it only
//!   fails to name a field);
//! - an `int` field is a JSON integer literal (no fraction, no exponent, no leading zero) of
//!   at most 4300 characters; a float, a string, null or a bool is refused;
//! - a skipped value is only checked for its syntax: its strings for control characters and
//!   escapes (not UTF-8), its numbers for their grammar (not their size).
//!
//! Integers are kept as i128. A used integer beyond that range (`Kind::Int`, 39 digits) is
//! `Fault::Beyond`: msgspec reads it as a Python int, the native calculator refuses it
//! (README, "Where it can differ"). msgspec skips nested values with the interpreter's
//! recursion limit, which depends on the caller's stack; here nesting deeper than
//! `NESTING_DEPTH_MAX` is refused.
//!
//! Speed: most records are as the engine writes them, compact and of plain ASCII, and of a
//! kind whose last record had the same keys in the same order. Such a record is read in one
//! pass over its quotes (`Quotes`, found 16 bytes at a time) and the bytes between its values
//! compared with that last record's (`Template`); anything else takes the general reading,
//! which alone says what is wrong with a record. Both read the same values.

use crate::json::special_bytes;

/// The deepest nesting of a skipped value (the record's object counts 1).
pub const NESTING_DEPTH_MAX: u32 = 512;
/// The longest integer literal (sign included) msgspec decodes into an `int` field.
const INT_CHARS_MAX: usize = 4300;
/// The most fields one struct has.
pub const FIELDS_MAX: usize = 9;
/// How many structs a reader reads (their `Struct::id`s).
pub const STRUCTS_MAX: usize = 8;

/// How a field decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// `str | None`, None when absent.
    OptStr,
    /// An integer whose value is used: one beyond i128 is `Fault::Beyond`.
    Int,
    /// An integer only compared (or not used at all): one beyond i128 saturates, which
    /// compares the same against anything the calculator holds.
    SaturatingInt,
}

#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

pub const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

/// No field in this slot of `Struct::slots`.
const NO_FIELD: u8 = u8::MAX;

/// The fields of one struct, and a table from a key to the field it may name, so that a
/// member's key is matched with one lookup and at most one comparison.
pub struct Struct {
    /// Which struct it is, below `STRUCTS_MAX`: where the reader keeps its template.
    id: usize,
    pub fields: &'static [Field],
    slots: [u8; 256],
}

impl Struct {
    pub const fn new(id: usize, fields: &'static [Field]) -> Self {
        assert!(id < STRUCTS_MAX && fields.len() <= FIELDS_MAX);
        let mut slots = [NO_FIELD; 256];
        let mut index = 0;
        while index < fields.len() {
            let slot = slot_of(fields[index].name.as_bytes());
            assert!(slots[slot] == NO_FIELD, "two fields share a slot: change slot_of");
            slots[slot] = index as u8;
            index += 1;
        }
        Struct { id, fields, slots }
    }

    /// The index of the field `key` names, or NO_FIELD.
    #[inline]
    fn index_of(&self, key: &[u8]) -> u8 {
        if key.is_empty() {
            return NO_FIELD;
        }
        let index = self.slots[slot_of(key)];
        if index != NO_FIELD && same_bytes(self.fields[usize::from(index)].name.as_bytes(), key) {
            index
        } else {
            NO_FIELD
        }
    }
}

/// A key's slot in `Struct::slots`: from its length and its first and last bytes.
#[inline]
const fn slot_of(key: &[u8]) -> usize {
    let (first, last) = (key[0] as usize, key[key.len() - 1] as usize);
    (key.len().wrapping_mul(31) ^ first.wrapping_mul(7) ^ last) & 0xFF
}

/// Why a record does not decode into the struct (fields by their index in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Not JSON by msgspec's rules, or not an object, or a string that is not UTF-8.
    Malformed,
    WrongType(u8),
    Missing(u8),
    /// An integer field beyond the i128 range.
    Beyond(u8),
    TooDeep,
}

impl Fault {
    /// The fault in words, naming the field of `fields` it concerns.
    pub fn describe(self, fields: &[Field]) -> String {
        let name = |index: u8| fields[usize::from(index)].name;
        match self {
            Fault::Malformed => "not a JSON object by msgspec's rules".to_string(),
            Fault::WrongType(index) => format!("field `{}` has the wrong type", name(index)),
            Fault::Missing(index) => format!("field `{}` is missing", name(index)),
            Fault::Beyond(index) => {
                format!("field `{}` is beyond the native calculator's integers (i128)", name(index))
            }
            Fault::TooDeep => format!("nested deeper than {NESTING_DEPTH_MAX}"),
        }
    }
}

type Read<T> = Result<T, Fault>;

/// A decoded string: a span of the record, or of the scratch buffer when it had escapes;
/// and whether it is ASCII. Packed in 8 bytes (start, length, flags) so that it is returned
/// in a register.
#[derive(Clone, Copy, Debug, Default)]
struct Span(u64);

impl Span {
    #[inline]
    fn new(start: usize, len: usize, in_scratch: bool, ascii: bool) -> Self {
        Span(
            (start as u64) << 32
                | (len as u64) << 2
                | u64::from(in_scratch) << 1
                | u64::from(ascii),
        )
    }

    #[inline]
    fn start(self) -> usize {
        (self.0 >> 32) as usize
    }

    #[inline]
    fn len(self) -> usize {
        ((self.0 & 0xFFFF_FFFF) >> 2) as usize
    }

    #[inline]
    fn in_scratch(self) -> bool {
        self.0 & 2 != 0
    }

    #[inline]
    fn ascii(self) -> bool {
        self.0 & 1 != 0
    }
}

/// A record's fields, as decoded by `Reader::read`.
pub struct Fields<'a> {
    record: &'a [u8],
    reader: &'a Reader,
}

impl<'a> Fields<'a> {
    /// A `Str` field (or an `OptStr` one, None when absent or null).
    #[inline]
    pub fn str(&self, index: usize) -> Option<&'a [u8]> {
        let reader = self.reader;
        (reader.strings & 1 << index != 0).then(|| reader.bytes(self.record, reader.spans[index]))
    }

    /// A `Str` field, present since `read` succeeded.
    #[inline]
    pub fn text(&self, index: usize) -> &'a [u8] {
        self.str(index).expect("a required string field")
    }

    /// An `Int` or `SaturatingInt` field, present since `read` succeeded.
    #[inline]
    pub fn int(&self, index: usize) -> i128 {
        self.reader.ints[index]
    }

    /// The exact value of a `SaturatingInt` field, as decimal digits.
    pub fn int_text(&self, index: usize) -> String {
        let value = self.int(index);
        if value != i128::MAX && value != i128::MIN {
            return value.to_string();
        }
        // Saturated, so read by `read_general`, which kept the literal (never `-0` here).
        let literal = self.reader.bytes(self.record, self.reader.spans[index]);
        String::from_utf8(literal.to_vec()).expect("an integer literal is ASCII")
    }
}

/// Reads records into fields, reusing its buffers from record to record.
pub struct Reader {
    scratch: Vec<u8>,
    /// Bit i: field i was present (null included); bit i of `strings`: it is a string.
    present: u16,
    strings: u16,
    spans: [Span; FIELDS_MAX],
    ints: [i128; FIELDS_MAX],
    /// Per struct: how the last record it read in one pass was laid out.
    templates: [Template; STRUCTS_MAX],
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            scratch: Vec::new(),
            present: 0,
            strings: 0,
            spans: [Span::default(); FIELDS_MAX],
            ints: [0; FIELDS_MAX],
            templates: Default::default(),
        }
    }
}

/// How a record was laid out: the bytes before each of its values (`{"key":` for the
/// first member, `,"key":` for the others) and the field each value is. A record whose
/// bytes between its values are those is read by comparing them, without a key lookup;
/// any record it matches in full is read right, whatever record it was learnt from.
#[derive(Default)]
struct Template {
    separators: Vec<u8>,
    /// Per member: where its separator ends in `separators`, and its field (or NO_FIELD).
    members: Vec<(usize, u8)>,
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader {
    /// Decode `record` as msgspec decodes it into the struct of `layout`'s fields.
    #[inline]
    pub fn read<'a>(&'a mut self, record: &'a [u8], layout: &Struct) -> Read<Fields<'a>> {
        let compact = Quotes::of_plain(record).is_some_and(|quotes| {
            self.read_as_before(record, &quotes, layout)
                || self.read_compact(record, &quotes, layout)
        });
        if !compact {
            self.read_general(record, layout)?;
        }
        Ok(Fields { record, reader: self })
    }

    /// `read_compact` of a record laid out as the last one it read of this struct: the
    /// bytes between the values compared with the template's. False, having decided
    /// nothing, when they differ.
    #[inline]
    fn read_as_before(&mut self, record: &[u8], quotes: &Quotes, layout: &Struct) -> bool {
        self.present = 0;
        self.strings = 0;
        let template = std::mem::take(&mut self.templates[layout.id]);
        let mut pos = 0;
        let mut separator_start = 0;
        let mut matched = !template.members.is_empty();
        for &(separator_end, index) in &template.members {
            let separator = &template.separators[separator_start..separator_end];
            separator_start = separator_end;
            let next = pos + separator.len();
            if !record.get(pos..next).is_some_and(|bytes| same_bytes(bytes, separator)) {
                matched = false;
                break;
            }
            match self.compact_value(record, quotes, next, layout, index) {
                Some(end) => pos = end,
                None => {
                    matched = false;
                    break;
                }
            }
        }
        self.templates[layout.id] = template;
        matched && pos + 1 == record.len() && record[pos] == b'}' && self.all_required(layout)
    }

    /// The common case: a record as the engine writes it (`Quotes::of_plain`), with no
    /// whitespace between tokens and values that are strings, integers of at most 19
    /// digits, `true`, `false` or `null`, each of its field's type. Its strings hold no
    /// escapes, so each ends at the next quote. Learns the record's template. False, having
    /// decided nothing, for anything else: `read_general` reads that.
    #[inline]
    fn read_compact(&mut self, record: &[u8], quotes: &Quotes, layout: &Struct) -> bool {
        self.present = 0;
        self.strings = 0;
        let mut template = std::mem::take(&mut self.templates[layout.id]);
        template.separators.clear();
        template.members.clear();
        let read = self.read_compact_members(record, quotes, layout, &mut template);
        self.templates[layout.id] = template;
        read && self.all_required(layout)
    }

    fn read_compact_members(
        &mut self,
        record: &[u8],
        quotes: &Quotes,
        layout: &Struct,
        template: &mut Template,
    ) -> bool {
        if record.first() != Some(&b'{') {
            return false;
        }
        let mut pos = 0;
        loop {
            let separator_start = pos;
            pos += 1; // `{` or `,`
            if record.get(pos) != Some(&b'"') {
                return false;
            }
            let Some(key_end) = quotes.next(pos + 1) else { return false };
            let index = layout.index_of(&record[pos + 1..key_end]);
            pos = key_end + 1;
            if record.get(pos) != Some(&b':') {
                return false;
            }
            pos += 1;
            template.separators.extend_from_slice(&record[separator_start..pos]);
            template.members.push((template.separators.len(), index));
            match self.compact_value(record, quotes, pos, layout, index) {
                Some(end) => pos = end,
                None => return false,
            }
            match record.get(pos) {
                Some(b',') => {}
                Some(b'}') => return pos + 1 == record.len(),
                _ => return false,
            }
        }
    }

    /// Read the value at `pos` of field `index` (NO_FIELD: of a member no field names) in
    /// one pass; where it ends, or None for a value the compact reading does not take.
    #[inline(always)]
    fn compact_value(
        &mut self,
        record: &[u8],
        quotes: &Quotes,
        pos: usize,
        layout: &Struct,
        index: u8,
    ) -> Option<usize> {
        let index = usize::from(index);
        let kind = layout.fields.get(index).map(|field| field.kind);
        let bit = if kind.is_some() { 1u16 << index } else { 0 };
        let end = match *record.get(pos)? {
            b'"' => {
                let end = quotes.next(pos + 1)?;
                if kind.is_some() {
                    if !matches!(kind, Some(Kind::Str | Kind::OptStr)) {
                        return None;
                    }
                    self.spans[index] = Span::new(pos + 1, end - pos - 1, false, true);
                    self.strings |= bit;
                }
                end + 1
            }
            b'-' | b'0'..=b'9' => {
                let (value, end) = small_integer(record, pos)?;
                if kind.is_some() {
                    if !matches!(kind, Some(Kind::Int | Kind::SaturatingInt)) {
                        return None;
                    }
                    self.ints[index] = value;
                }
                end
            }
            c @ (b't' | b'f' | b'n') => {
                let word: &[u8] = match c {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                let null_for_optional = c == b'n' && kind == Some(Kind::OptStr);
                if !record[pos..].starts_with(word) || (kind.is_some() && !null_for_optional) {
                    return None;
                }
                self.strings &= !bit;
                pos + word.len()
            }
            _ => return None,
        };
        self.present |= bit;
        Some(end)
    }

    fn all_required(&self, layout: &Struct) -> bool {
        layout
            .fields
            .iter()
            .enumerate()
            .all(|(index, field)| self.present & 1 << index != 0 || field.kind == Kind::OptStr)
    }

    /// `read` of any record: msgspec's rules in full, and the first fault found.
    #[inline(never)]
    fn read_general(&mut self, record: &[u8], layout: &Struct) -> Read<()> {
        self.present = 0;
        self.strings = 0;
        self.scratch.clear();
        if record.len() >= 1 << 30 {
            return Err(Fault::Malformed); // spans are 30 bits; no event is 1 GiB
        }
        let mut cursor = Cursor { input: record, pos: 0 };
        if cursor.peek_ws()? != b'{' {
            return Err(Fault::Malformed); // msgspec: "Expected `object`"
        }
        cursor.pos += 1;
        let mut first = true;
        loop {
            let mut c = cursor.peek_ws()?;
            if c == b'}' {
                cursor.pos += 1;
                break;
            }
            if c == b',' && !first {
                cursor.pos += 1;
                c = cursor.peek_ws()?;
            } else if first {
                first = false;
            } else {
                return Err(Fault::Malformed);
            }
            if c != b'"' {
                return Err(Fault::Malformed); // a trailing comma, or a key not a string
            }
            let key = self.decoded_string(&mut cursor)?;
            if cursor.peek_ws()? != b':' {
                return Err(Fault::Malformed);
            }
            cursor.pos += 1;
            let index = usize::from(layout.index_of(self.bytes(record, key)));
            if key.in_scratch() {
                self.scratch.truncate(key.start()); // the key is no longer needed
            }
            match layout.fields.get(index) {
                Some(field) => self.typed(&mut cursor, field.kind, index)?,
                None => skip(&mut cursor, 1)?,
            }
        }
        if record[cursor.pos..].iter().any(|&b| !is_ws(b)) {
            return Err(Fault::Malformed); // trailing characters
        }
        for (index, field) in layout.fields.iter().enumerate() {
            let present = self.present & 1 << index != 0;
            if !present && field.kind != Kind::OptStr {
                return Err(Fault::Missing(index as u8));
            }
            let saturated = matches!(self.ints[index], i128::MAX | i128::MIN);
            if present && field.kind == Kind::Int && saturated {
                return Err(Fault::Beyond(index as u8));
            }
        }
        Ok(())
    }

    #[inline]
    fn bytes<'a>(&'a self, record: &'a [u8], span: Span) -> &'a [u8] {
        let bytes = if span.in_scratch() { &self.scratch[..] } else { record };
        &bytes[span.start()..span.start() + span.len()]
    }

    /// Decode the value of field `index`, of `kind`, at the cursor.
    #[inline]
    fn typed(&mut self, cursor: &mut Cursor<'_>, kind: Kind, index: usize) -> Read<()> {
        let c = cursor.peek_ws()?;
        let bit = 1u16 << index;
        match (kind, c) {
            (Kind::OptStr, b'n') => {
                cursor.ident(b"null")?;
                self.strings &= !bit;
            }
            (Kind::Str | Kind::OptStr, b'"') => {
                let span = self.decoded_string(cursor)?;
                if !span.ascii() && std::str::from_utf8(self.bytes(cursor.input, span)).is_err() {
                    return Err(Fault::Malformed); // "Invalid UTF-8 encoded string"
                }
                self.spans[index] = span;
                self.strings |= bit;
            }
            (Kind::Int | Kind::SaturatingInt, b'-' | b'0'..=b'9') => {
                let start = cursor.pos;
                self.ints[index] = cursor.integer(index as u8)?; // Beyond: for the last one
                self.spans[index] = Span::new(start, cursor.pos - start, false, true);
            }
            _ => return Err(Fault::WrongType(index as u8)),
        }
        self.present |= bit;
        Ok(())
    }

    /// Decode a string at the cursor's `"` as msgspec's `json_decode_string_view` does
    /// (escapes decoded, control characters refused, UTF-8 not checked); and whether it is
    /// ASCII.
    #[inline]
    fn decoded_string(&mut self, cursor: &mut Cursor<'_>) -> Read<Span> {
        let input = cursor.input;
        let start = cursor.pos + 1;
        let mut pos = start;
        // Fast path: ASCII up to the closing quote, 8 bytes at a time.
        while let Some(chunk) = input.get(pos..pos + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if special == 0 {
                pos += 8;
                continue;
            }
            pos += (special.trailing_zeros() / 8) as usize;
            if input[pos] == b'"' {
                cursor.pos = pos + 1;
                return Ok(Span::new(start, pos - start, false, true));
            }
            break;
        }
        self.decoded_string_slow(cursor, start, pos)
    }

    /// `decoded_string` from `pos`, where a byte that is not plain ASCII may be.
    #[inline(never)]
    fn decoded_string_slow(
        &mut self,
        cursor: &mut Cursor<'_>,
        start: usize,
        mut pos: usize,
    ) -> Read<Span> {
        let input = cursor.input;
        loop {
            let Some(&b) = input.get(pos) else { return Err(Fault::Malformed) };
            match b {
                b'"' => {
                    cursor.pos = pos + 1;
                    let text = &input[start..pos];
                    return Ok(Span::new(start, pos - start, false, text.is_ascii()));
                }
                b'\\' => break,
                0..=0x1f => return Err(Fault::Malformed),
                _ => pos += 1,
            }
        }
        // Escapes: decode into the scratch buffer.
        let scratch_start = self.scratch.len();
        self.scratch.extend_from_slice(&input[start..pos]);
        loop {
            let Some(&b) = input.get(pos) else { return Err(Fault::Malformed) };
            match b {
                b'"' => {
                    cursor.pos = pos + 1;
                    let decoded = &self.scratch[scratch_start..];
                    return Ok(Span::new(scratch_start, decoded.len(), true, decoded.is_ascii()));
                }
                b'\\' => {
                    let Some(&escape) = input.get(pos + 1) else { return Err(Fault::Malformed) };
                    pos += 2;
                    let plain = match escape {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let (code_point, end) = unicode_escape(input, pos)?;
                            let mut utf8 = [0u8; 4];
                            self.scratch
                                .extend_from_slice(code_point.encode_utf8(&mut utf8).as_bytes());
                            pos = end;
                            continue;
                        }
                        _ => return Err(Fault::Malformed),
                    };
                    self.scratch.push(plain);
                }
                0..=0x1f => return Err(Fault::Malformed),
                _ => {
                    self.scratch.push(b);
                    pos += 1;
                }
            }
        }
    }
}

/// The longest record `read_compact` reads.
const COMPACT_BYTES_MAX: usize = 1024;

/// Where the quotes of a record of plain ASCII are, one bit per byte.
struct Quotes {
    words: [u64; COMPACT_BYTES_MAX / 64],
}

impl Quotes {
    /// The quotes of `record`, or None when it is longer than `COMPACT_BYTES_MAX` or holds
    /// a backslash, a control character or a byte that is not ASCII.
    #[inline]
    fn of_plain(record: &[u8]) -> Option<Quotes> {
        if record.len() > COMPACT_BYTES_MAX {
            return None;
        }
        let mut quotes = Quotes { words: [0; COMPACT_BYTES_MAX / 64] };
        let mut blocks = record.chunks_exact(16);
        let mut special = 0;
        for (number, block) in blocks.by_ref().enumerate() {
            let (block_quotes, block_special) = block_masks(block.try_into().expect("16 bytes"));
            quotes.words[number / 4] |= u64::from(block_quotes) << (number % 4 * 16);
            special |= block_special;
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            let mut block = [b' '; 16]; // neither a quote nor special
            block[..rest.len()].copy_from_slice(rest);
            let (block_quotes, block_special) = block_masks(&block);
            let number = record.len() / 16;
            quotes.words[number / 4] |= u64::from(block_quotes) << (number % 4 * 16);
            special |= block_special;
        }
        (special == 0).then_some(quotes)
    }

    /// The first quote at or after `from`.
    #[inline]
    fn next(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.words.get(word)? & (u64::MAX << (from % 64));
        while bits == 0 {
            word += 1;
            bits = *self.words.get(word)?;
        }
        Some(word * 64 + bits.trailing_zeros() as usize)
    }
}

/// Of 16 bytes, which are quotes and which are a backslash, a control character or not
/// ASCII, one bit per byte.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_masks(block: &[u8; 16]) -> (u16, u16) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes of `block`.
    unsafe {
        let bytes = _mm_loadu_si128(block.as_ptr().cast());
        let quotes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
        let backslashes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
        // As signed bytes, control characters and non-ASCII bytes are those below 0x20.
        let low = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
        let special = _mm_or_si128(backslashes, low);
        (_mm_movemask_epi8(quotes) as u16, _mm_movemask_epi8(special) as u16)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_masks(block: &[u8; 16]) -> (u16, u16) {
    let (mut quotes, mut special) = (0u16, 0u16);
    for (index, &byte) in block.iter().enumerate() {
        quotes |= u16::from(byte == b'"') << index;
        special |= u16::from(byte == b'\\' || byte < 0x20 || byte >= 0x80) << index;
    }
    (quotes, special)
}

/// The JSON integer of at most 19 digits at `pos` (a u64), and where it ends; None for anything
/// else (a longer one, a float, a malformed number).
#[inline(always)]
fn small_integer(input: &[u8], pos: usize) -> Option<(i128, usize)> {
    let negative = input[pos] == b'-';
    let start = pos + usize::from(negative);
    let mut end = start;
    let mut value: u64 = 0;
    while let Some(&digit) = input.get(end).filter(|digit| digit.is_ascii_digit()) {
        value = value * 10 + u64::from(digit - b'0');
        end += 1;
        if end - start > 19 {
            return None;
        }
    }
    let leading_zero = input.get(start) == Some(&b'0') && end - start > 1;
    if end == start || leading_zero || matches!(input.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((if negative { -i128::from(value) } else { i128::from(value) }, end))
}

/// The start of the last occurrence of `needle` (2 bytes or more) in `haystack`. Looks
/// from the end, 16 places at a time where the first, second and last bytes all match.
pub fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    assert!(needle.len() >= 2);
    let last_start = haystack.len().checked_sub(needle.len())?;
    let found = |at: usize| same_bytes(&haystack[at..at + needle.len()], needle);
    let mut end = last_start + 1; // the places below `end` are left to look at
    #[cfg(target_arch = "x86_64")]
    while end >= 16 {
        let start = end - 16;
        let mut candidates = rfind_candidates(haystack, start, needle);
        while candidates != 0 {
            let at = start + 15 - candidates.leading_zeros() as usize;
            if found(at) {
                return Some(at);
            }
            candidates &= !(1 << (at - start));
        }
        end = start;
    }
    (0..end).rev().find(|&at| haystack[at] == needle[0] && found(at))
}

/// Of the places `start..start + 16` (where `needle` fits), those where the needle's first,
/// second and last bytes match, one bit each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rfind_candidates(haystack: &[u8], start: usize, needle: &[u8]) -> u16 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let last = needle.len() - 1;
    let blocks = [
        &haystack[start..start + 16],
        &haystack[start + 1..start + 17],
        &haystack[start + last..start + last + 16],
    ];
    // SAFETY: SSE2 is part of x86_64; each load reads the 16 bytes of its slice.
    unsafe {
        let matches = |block: &[u8], byte: u8| {
            _mm_cmpeq_epi8(_mm_loadu_si128(block.as_ptr().cast()), _mm_set1_epi8(byte as i8))
        };
        let both = _mm_and_si128(matches(blocks[0], needle[0]), matches(blocks[1], needle[1]));
        _mm_movemask_epi8(_mm_and_si128(both, matches(blocks[2], needle[last]))) as u16
    }
}

/// `a == b` for short slices, in a few loads rather than a call to memcmp.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let word = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let half = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    };
    if len >= 8 {
        let mut at = 0;
        while at + 8 < len {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        return word(a, len - 8) == word(b, len - 8); // the last 8, overlapping
    }
    if len >= 4 {
        return half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4);
    }
    (len < 1 || a[0] == b[0]) && (len < 2 || a[1] == b[1]) && (len < 3 || a[2] == b[2])
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The code point of the `\u` escape whose 4 hex digits start at `pos` (with the low half
/// after a high surrogate), and the position after it; lone surrogates are refused.
fn unicode_escape(input: &[u8], pos: usize) -> Read<(char, usize)> {
    let high = hex4(input, pos)?;
    if (0xDC00..=0xDFFF).contains(&high) {
        return Err(Fault::Malformed);
    }
    if !(0xD800..=0xDBFF).contains(&high) {
        return Ok((char::from_u32(high).ok_or(Fault::Malformed)?, pos + 4));
    }
    let rest = pos + 4;
    if input.len() < rest + 6 || input[rest] != b'\\' || input[rest + 1] != b'u' {
        return Err(Fault::Malformed);
    }
    let low = hex4(input, rest + 2)?;
    if !(0xDC00..=0xDFFF).contains(&low) {
        return Err(Fault::Malformed);
    }
    let code_point = 0x10000 + (((high - 0xD800) << 10) | (low - 0xDC00));
    Ok((char::from_u32(code_point).ok_or(Fault::Malformed)?, rest + 6))
}

fn hex4(input: &[u8], pos: usize) -> Read<u32> {
    let digits = input.get(pos..pos + 4).ok_or(Fault::Malformed)?;
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = (digit as char).to_digit(16).ok_or(Fault::Malformed)?;
        Ok(value << 4 | nibble)
    })
}

/// Skip a value as msgspec's `json_skip` does: its syntax checked, nothing kept.
fn skip(cursor: &mut Cursor<'_>, depth: u32) -> Read<()> {
    match cursor.peek_ws()? {
        b'n' => cursor.ident(b"null"),
        b't' => cursor.ident(b"true"),
        b'f' => cursor.ident(b"false"),
        b'"' => skip_string(cursor),
        b'[' => skip_items(cursor, depth + 1, b']'),
        b'{' => skip_items(cursor, depth + 1, b'}'),
        _ => cursor.skip_number(),
    }
}

/// Skip an array or an object at the cursor's bracket, to its `close`.
fn skip_items(cursor: &mut Cursor<'_>, depth: u32, close: u8) -> Read<()> {
    if depth > NESTING_DEPTH_MAX {
        return Err(Fault::TooDeep);
    }
    cursor.pos += 1;
    let mut first = true;
    loop {
        let mut c = cursor.peek_ws()?;
        if c == close {
            cursor.pos += 1;
            return Ok(());
        }
        if c == b',' && !first {
            cursor.pos += 1;
            c = cursor.peek_ws()?;
        } else if first {
            first = false;
        } else {
            return Err(Fault::Malformed);
        }
        if close == b'}' {
            if c != b'"' {
                return Err(Fault::Malformed); // a trailing comma, or a key not a string
            }
            skip_string(cursor)?;
            if cursor.peek_ws()? != b':' {
                return Err(Fault::Malformed);
            }
            cursor.pos += 1;
        } else if c == b']' {
            return Err(Fault::Malformed); // a trailing comma
        }
        skip(cursor, depth)?;
    }
}

/// Skip a string: up to its closing quote, escapes checked, control characters refused,
/// any other byte taken (no UTF-8 check).
fn skip_string(cursor: &mut Cursor<'_>) -> Read<()> {
    let input = cursor.input;
    let mut pos = cursor.pos + 1;
    loop {
        while let Some(chunk) = input.get(pos..pos + 8) {
            let special =
                quote_backslash_or_control(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if special == 0 {
                pos += 8;
                continue;
            }
            pos += (special.trailing_zeros() / 8) as usize;
            break;
        }
        let Some(&b) = input.get(pos) else { return Err(Fault::Malformed) };
        match b {
            b'"' => {
                cursor.pos = pos + 1;
                return Ok(());
            }
            b'\\' => {
                let Some(&escape) = input.get(pos + 1) else { return Err(Fault::Malformed) };
                pos += 2;
                match escape {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => pos = unicode_escape(input, pos)?.1,
                    _ => return Err(Fault::Malformed),
                }
            }
            0..=0x1f => return Err(Fault::Malformed),
            _ => pos += 1,
        }
    }
}

/// The high bit of each byte of `word` that is a quote, a backslash or a control
/// character; the lowest set bit is exact (higher ones may be spurious).
#[inline(always)]
fn quote_backslash_or_control(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    has_zero(word ^ (ONES * u64::from(b'"'))) | has_zero(word ^ (ONES * u64::from(b'\\'))) | control
}

impl Cursor<'_> {
    /// Skip whitespace and return the next byte; the end of the input is an error.
    #[inline]
    fn peek_ws(&mut self) -> Read<u8> {
        while let Some(&c) = self.input.get(self.pos) {
            if !is_ws(c) {
                return Ok(c);
            }
            self.pos += 1;
        }
        Err(Fault::Malformed)
    }

    fn ident(&mut self, word: &[u8]) -> Read<()> {
        if self.input.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Fault::Malformed)
        }
    }

    /// The digits of the input from the cursor on, and how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.input.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// An integer literal for an `int` field (saturated to the i128 range): a float is the
    /// wrong type, a malformed number malformed.
    #[inline]
    fn integer(&mut self, index: u8) -> Read<i128> {
        let start = self.pos;
        let negative = self.input[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        match self.input.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.input.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return Err(Fault::Malformed);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Fault::Malformed),
        }
        let digits_end = self.pos;
        if matches!(self.input.get(self.pos), Some(b'.' | b'e' | b'E')) {
            self.pos = start;
            self.skip_number()?;
            return Err(Fault::WrongType(index)); // a float
        }
        if self.pos - start > INT_CHARS_MAX {
            return Err(Fault::Malformed); // "Integer value out of range"
        }
        let digits = &self.input[digits_start..digits_end];
        if digits.len() <= 18 {
            let value =
                digits.iter().fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0'));
            return Ok(if negative { -i128::from(value) } else { i128::from(value) });
        }
        let mut value: i128 = 0;
        for &digit in digits {
            value =
                match value.checked_mul(10).and_then(|v| v.checked_add(i128::from(digit - b'0'))) {
                    Some(value) => value,
                    None => return Ok(if negative { i128::MIN } else { i128::MAX }),
                };
        }
        Ok(if negative { -value } else { value })
    }

    /// Skip a number as msgspec's `json_maybe_skip_number` does: its grammar only.
    fn skip_number(&mut self) -> Read<()> {
        if self.input.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        if self.input.get(self.pos) == Some(&b'0') {
            self.pos += 1;
            if self.input.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(Fault::Malformed);
            }
        } else if self.digits() == 0 {
            return Err(Fault::Malformed);
        }
        if self.input.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Fault::Malformed);
            }
        }
        if matches!(self.input.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.input.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Fault::Malformed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEAD: Struct = Struct::new(
        0,
        &[field("type", Kind::Str), field("seq", Kind::SaturatingInt), field("ts", Kind::Int)],
    );

    fn head(record: &[u8]) -> Read<(Vec<u8>, i128, i128)> {
        let mut reader = Reader::default();
        let fields = reader.read(record, &HEAD)?;
        Ok((fields.text(0).to_vec(), fields.int(1), fields.int(2)))
    }

    #[test]
    fn reads_the_fields_and_skips_the_rest() {
        let record = br#"{"type":"trade","seq":3,"ts":-0,"x":[1,{"a":"\u00e9"},null,1e999]}"#;
        assert_eq!(head(record), Ok((b"trade".to_vec(), 3, 0)));
        let spaced = b" {\"ts\" : 5 ,\n\"se\\u0071\":7,\"type\":\"t\\\"\",\"seq\":8}\r\n";
        assert_eq!(head(spaced), Ok((b"t\"".to_vec(), 8, 5))); // the last duplicate wins
    }

    #[test]
    fn refuses_what_msgspec_refuses() {
        for record in [
            &b"[]"[..],
            b"{\"type\":\"t\",\"seq\":1,\"ts\":2} x",
            b"{\"type\":\"t\",\"seq\":1,\"ts\":2,}",
            b"{\"type\":\"t\",\"seq\":01,\"ts\":2}",
            b"{\"type\":\"\xff\",\"seq\":1,\"ts\":2}",
            b"{\"type\":\"t\",\"seq\":1,\"ts\":2,\"x\":\"\\ud800\"}",
            b"{\"type\":\"t\",\"seq\":1,\"ts\":2,\"x\":\"\x01\"}",
            b"{\"type\":\"t\",\"seq\":1,\"ts\":2,\"x\":[1,]}",
        ] {
            assert_eq!(head(record), Err(Fault::Malformed), "{}", String::from_utf8_lossy(record));
        }
        assert_eq!(head(br#"{"type":"t","seq":1.0,"ts":2}"#), Err(Fault::WrongType(1)));
        assert_eq!(head(br#"{"type":null,"seq":1,"ts":2}"#), Err(Fault::WrongType(0)));
        assert_eq!(head(br#"{"type":"t","ts":2}"#), Err(Fault::Missing(1)));
    }

    #[test]
    fn skipped_values_are_checked_for_syntax_only() {
        let big = format!(r#"{{"type":"t","seq":1,"ts":2,"x":1{}}}"#, "0".repeat(5000));
        assert!(head(big.as_bytes()).is_ok());
        assert!(head(b"{\"type\":\"t\",\"seq\":1,\"ts\":2,\"x\":\"\xff\"}").is_ok());
        let too_long = format!(r#"{{"type":"t","seq":1,"ts":1{}}}"#, "0".repeat(4300));
        assert_eq!(head(too_long.as_bytes()), Err(Fault::Malformed));
    }

    #[test]
    fn integers_beyond_i128_saturate_or_are_refused() {
        let huge = "9".repeat(40);
        let seq = format!(r#"{{"type":"t","seq":{huge},"ts":2}}"#);
        assert_eq!(head(seq.as_bytes()), Ok((b"t".to_vec(), i128::MAX, 2)));
        let ts = format!(r#"{{"type":"t","seq":1,"ts":-{huge}}}"#);
        assert_eq!(head(ts.as_bytes()), Err(Fault::Beyond(2)));
    }

    #[test]
    fn rfind_finds_the_last_occurrence() {
        let needle = b"\"time_in_force\":\"";
        let mut state = 7u64;
        for _ in 0..2000 {
            let mut haystack = Vec::new();
            for _ in 0..(state % 90) {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                match state >> 60 {
                    0 => haystack.extend_from_slice(needle),
                    1 => haystack.extend_from_slice(&needle[..(state >> 40) as usize % 17]),
                    _ => haystack.push(b"\"tf:_e"[(state >> 33) as usize % 6]),
                }
            }
            let expected = haystack.windows(needle.len()).rposition(|window| window == needle);
            assert_eq!(rfind(&haystack, needle), expected);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let depth = NESTING_DEPTH_MAX as usize;
        let within = format!(
            r#"{{"type":"t","seq":1,"ts":2,"x":{}{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        assert!(head(within.as_bytes()).is_ok());
        let beyond = format!(
            r#"{{"type":"t","seq":1,"ts":2,"x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(head(beyond.as_bytes()), Err(Fault::TooDeep));
    }
}
