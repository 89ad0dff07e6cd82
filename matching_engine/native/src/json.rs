//! A JSON scanner with exactly the acceptance rules of msgspec's generic JSON decoder
//! (`msgspec.json.Decoder()`), as `protocol.codec._salvage` runs it.
//!
//! It reads one command line and keeps the top-level object's members, in order and with
//! duplicates, so `decode.rs` can replay msgspec's typed decode (which fails on the first
//! bad member) and the salvage (which reads a dict, where the last duplicate wins).
//! Nested arrays and objects are checked and skipped, never stored.
//!
//! msgspec's rules reproduced here: whitespace is only space, tab, LF and CR; numbers are
//! strict JSON (no leading zeros, no `+`, no `.5`, no NaN/Infinity); a float literal whose
//! value rounds to infinity is an error ("Number out of range"); an integer literal that
//! does not fit 64 bits is a Python int, an error past 4300 characters; strings reject raw
//! control characters, accept the JSON escapes, reject lone UTF-16 surrogates and invalid
//! UTF-8; nothing may follow the value but whitespace; nesting deeper than
//! `NESTING_DEPTH_MAX` is an error.

/// The deepest nesting (the top-level object counts 1) a command line may have: the same
/// cap as `protocol.codec.NESTING_MAX`, which refuses deeper input before msgspec recurses
/// into it, so the outcome of every line is a function of the line alone.
pub const NESTING_DEPTH_MAX: u32 = 32;

/// Lines this long or longer are not scanned (taken as invalid JSON).
pub const LINE_BYTES_MAX: usize = 1 << 31;

/// The longest integer literal (sign included) that msgspec turns into a Python int.
const BIG_INT_CHARS_MAX: usize = 4300;

/// A decoded string: a span of the line, or of the scratch buffer when it had escapes.
/// Packed in 8 bytes (start, length, where) so members stay small.
#[derive(Clone, Copy, Debug)]
pub struct Str(u64);

impl Str {
    #[inline]
    fn new(start: usize, len: usize, in_scratch: bool) -> Self {
        Str((start as u64) << 32 | (len as u64) << 1 | u64::from(in_scratch))
    }

    #[inline]
    fn start(self) -> usize {
        (self.0 >> 32) as usize
    }

    #[inline]
    fn len(self) -> usize {
        ((self.0 & 0xFFFF_FFFF) >> 1) as usize
    }

    #[inline]
    fn in_scratch(self) -> bool {
        self.0 & 1 == 1
    }
}

/// A JSON integer, as the span of its literal in the line.
#[derive(Clone, Copy, Debug)]
pub struct Int {
    pub start: u32,
    pub len: u32,
}

impl Int {
    /// The literal's text.
    #[inline]
    pub fn literal(self, line: &[u8]) -> &[u8] {
        &line[self.start as usize..(self.start + self.len) as usize]
    }

    /// The value, saturated to the i128 range.
    #[inline]
    pub fn value(self, line: &[u8]) -> i128 {
        saturating_int(self.literal(line))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Val {
    Str(Str),
    Int(Int),
    Float,
    Bool(bool),
    Null,
    Array,
    Object,
}

/// What the generic decode makes of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Top {
    /// Not JSON by msgspec's rules (DecodeError, UnicodeDecodeError, RecursionError).
    Invalid,
    /// Valid JSON, but not an object.
    NotObject,
    /// An object: its members are in `Scanner::members`.
    Object,
}

#[derive(Default)]
pub struct Scanner {
    /// The top-level object's members, in order, duplicates kept.
    pub members: Vec<(Str, Val)>,
    /// Decoded strings that had escapes.
    pub scratch: Vec<u8>,
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

type Scan<T> = Result<T, ()>;

impl Scanner {
    /// The bytes of a decoded string.
    #[inline]
    pub fn bytes<'a>(&'a self, line: &'a [u8], s: Str) -> &'a [u8] {
        let start = s.start();
        let end = start + s.len();
        if s.in_scratch() {
            &self.scratch[start..end]
        } else {
            &line[start..end]
        }
    }

    /// Scan one line (already stripped of its trailing CR/LF) as msgspec would.
    pub fn scan(&mut self, line: &[u8]) -> Top {
        self.members.clear();
        self.scratch.clear();
        if line.len() >= LINE_BYTES_MAX {
            return Top::Invalid; // spans are 31 bits; such a line is no command anyway
        }
        let mut cursor = Cursor { input: line, pos: 0 };
        let top = match self.top_value(&mut cursor) {
            Ok(top) => top,
            Err(()) => return Top::Invalid,
        };
        cursor.skip_ws();
        if cursor.pos != line.len() {
            return Top::Invalid; // trailing characters
        }
        top
    }

    fn top_value(&mut self, cursor: &mut Cursor<'_>) -> Scan<Top> {
        let c = cursor.peek_ws()?;
        if c != b'{' {
            self.value(cursor, 0)?;
            return Ok(Top::NotObject);
        }
        cursor.pos += 1;
        let mut first = true;
        loop {
            let mut c = cursor.peek_ws()?;
            if c == b'}' {
                cursor.pos += 1;
                return Ok(Top::Object);
            }
            if !first {
                if c != b',' {
                    return Err(());
                }
                cursor.pos += 1;
                c = cursor.peek_ws()?;
            }
            first = false;
            if c != b'"' {
                return Err(()); // a non-string key, or a trailing comma
            }
            let key = self.string(cursor, true)?;
            if cursor.peek_ws()? != b':' {
                return Err(());
            }
            cursor.pos += 1;
            let value = self.value(cursor, 1)?;
            self.members.push((key, value));
        }
    }

    /// Scan one value at nesting `depth` (containers around it); store strings only when
    /// they are the top-level object's members.
    #[inline(always)]
    fn value(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<Val> {
        let c = cursor.peek_ws()?;
        match c {
            b'n' => cursor.ident(b"null").map(|_| Val::Null),
            b't' => cursor.ident(b"true").map(|_| Val::Bool(true)),
            b'f' => cursor.ident(b"false").map(|_| Val::Bool(false)),
            b'"' => self.string(cursor, depth <= 1).map(Val::Str),
            b'[' => self.array(cursor, depth + 1).map(|_| Val::Array),
            b'{' => self.object(cursor, depth + 1).map(|_| Val::Object),
            _ => cursor.number(),
        }
    }

    #[inline(never)]
    fn array(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<()> {
        if depth > NESTING_DEPTH_MAX {
            return Err(());
        }
        cursor.pos += 1;
        let mut first = true;
        loop {
            let c = cursor.peek_ws()?;
            if c == b']' {
                cursor.pos += 1;
                return Ok(());
            }
            if !first {
                if c != b',' {
                    return Err(());
                }
                cursor.pos += 1;
                if cursor.peek_ws()? == b']' {
                    return Err(()); // trailing comma
                }
            }
            first = false;
            self.value(cursor, depth)?;
        }
    }

    #[inline(never)]
    fn object(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<()> {
        if depth > NESTING_DEPTH_MAX {
            return Err(());
        }
        cursor.pos += 1;
        let mut first = true;
        loop {
            let mut c = cursor.peek_ws()?;
            if c == b'}' {
                cursor.pos += 1;
                return Ok(());
            }
            if !first {
                if c != b',' {
                    return Err(());
                }
                cursor.pos += 1;
                c = cursor.peek_ws()?;
            }
            first = false;
            if c != b'"' {
                return Err(());
            }
            self.string(cursor, false)?;
            if cursor.peek_ws()? != b':' {
                return Err(());
            }
            cursor.pos += 1;
            self.value(cursor, depth)?;
        }
    }

    /// Scan a string at the cursor's `"`; keep its decoded bytes when `keep` (else the
    /// returned span is meaningless, the string is only checked).
    #[inline]
    fn string(&mut self, cursor: &mut Cursor<'_>, keep: bool) -> Scan<Str> {
        let input = cursor.input;
        let start = cursor.pos + 1;
        let mut pos = start;
        let mut ascii = true;
        // Fast path: plain ASCII up to the closing quote, 8 bytes at a time.
        while let Some(chunk) = input.get(pos..pos + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if special == 0 {
                pos += 8;
                continue;
            }
            pos += (special.trailing_zeros() / 8) as usize;
            if input[pos] == b'"' {
                cursor.pos = pos + 1;
                return Ok(Str::new(start, pos - start, false));
            }
            break;
        }
        loop {
            let Some(&b) = input.get(pos) else { return Err(()) };
            if b == b'"' {
                cursor.pos = pos + 1;
                if !ascii && std::str::from_utf8(&input[start..pos]).is_err() {
                    return Err(());
                }
                return Ok(Str::new(start, pos - start, false));
            }
            if b == b'\\' {
                break;
            }
            if b < 0x20 {
                return Err(());
            }
            ascii &= b < 0x80;
            pos += 1;
        }
        // Slow path: decode escapes into the scratch buffer, then check it is UTF-8.
        let scratch_start = self.scratch.len();
        self.scratch.extend_from_slice(&input[start..pos]);
        loop {
            let Some(&b) = input.get(pos) else { return Err(()) };
            match b {
                b'"' => {
                    cursor.pos = pos + 1;
                    break;
                }
                b'\\' => {
                    let Some(&e) = input.get(pos + 1) else { return Err(()) };
                    pos += 2;
                    let plain = match e {
                        b'n' => b'\n',
                        b'"' => b'"',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'u' => {
                            pos = self.unicode_escape(input, pos)?;
                            continue;
                        }
                        _ => return Err(()),
                    };
                    self.scratch.push(plain);
                }
                0..=0x1f => return Err(()),
                _ => {
                    self.scratch.push(b);
                    pos += 1;
                }
            }
        }
        if std::str::from_utf8(&self.scratch[scratch_start..]).is_err() {
            return Err(());
        }
        if !keep {
            self.scratch.truncate(scratch_start);
        }
        Ok(Str::new(scratch_start, self.scratch.len() - scratch_start, true))
    }

    /// Decode the 4 hex digits after `\u` at `pos` (and a low surrogate after a high one);
    /// append the code point as UTF-8; return the position after the escape.
    fn unicode_escape(&mut self, input: &[u8], pos: usize) -> Scan<usize> {
        let mut cp = hex4(input, pos)?;
        let mut end = pos + 4;
        if (0xDC00..=0xDFFF).contains(&cp) {
            return Err(());
        }
        if (0xD800..=0xDBFF).contains(&cp) {
            if input.len() < end + 6 || input[end] != b'\\' || input[end + 1] != b'u' {
                return Err(());
            }
            let low = hex4(input, end + 2)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(());
            }
            cp = 0x10000 + (((cp - 0xD800) << 10) | (low - 0xDC00));
            end += 6;
        }
        let ch = char::from_u32(cp).ok_or(())?;
        let mut utf8 = [0u8; 4];
        self.scratch.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
        Ok(end)
    }
}

/// The high bit of each byte of `word` that is a quote, a backslash, a control character
/// or non-ASCII; the lowest set bit is exact (higher ones may be spurious).
#[inline(always)]
pub(crate) fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    has_zero(word ^ (ONES * u64::from(b'"')))
        | has_zero(word ^ (ONES * u64::from(b'\\')))
        | control
        | (word & HIGH)
}

fn hex4(input: &[u8], pos: usize) -> Scan<u32> {
    let digits = input.get(pos..pos + 4).ok_or(())?;
    let mut cp = 0u32;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(()),
        };
        cp = (cp << 4) | u32::from(v);
    }
    Ok(cp)
}

impl Cursor<'_> {
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&c) = self.input.get(self.pos) {
            if c != b' ' && c != b'\n' && c != b'\r' && c != b'\t' {
                break;
            }
            self.pos += 1;
        }
    }

    /// Skip whitespace and return the next byte; end of input is an error.
    #[inline]
    fn peek_ws(&mut self) -> Scan<u8> {
        self.skip_ws();
        self.input.get(self.pos).copied().ok_or(())
    }

    fn ident(&mut self, word: &[u8]) -> Scan<()> {
        if self.input.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// Scan a number as msgspec's `parse_number_inline` does.
    #[inline(always)]
    fn number(&mut self) -> Scan<Val> {
        let input = self.input;
        let start = self.pos;
        let mut p = start;
        let negative = input[p] == b'-';
        if negative {
            p += 1;
        }
        let integer_start = p;
        match input.get(p) {
            Some(b'0') => {
                p += 1;
                if input.get(p).is_some_and(u8::is_ascii_digit) {
                    return Err(());
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while input.get(p).is_some_and(u8::is_ascii_digit) {
                    p += 1;
                }
            }
            _ => return Err(()),
        }
        let integer_end = p;
        let mut fraction = (p, p);
        let mut is_float = false;
        if input.get(p) == Some(&b'.') {
            is_float = true;
            p += 1;
            let fraction_start = p;
            while input.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
            if p == fraction_start {
                return Err(());
            }
            fraction = (fraction_start, p);
        }
        let mut exponent: i64 = 0;
        if matches!(input.get(p), Some(b'e' | b'E')) {
            is_float = true;
            p += 1;
            let mut sign = 1;
            match input.get(p) {
                Some(b'+') => p += 1,
                Some(b'-') => {
                    sign = -1;
                    p += 1;
                }
                _ => {}
            }
            let digits_start = p;
            while let Some(&d) = input.get(p).filter(|d| d.is_ascii_digit()) {
                // msgspec stops accumulating once the exponent reaches 10000.
                if exponent < 10_000 {
                    exponent = exponent * 10 + i64::from(d - b'0');
                }
                p += 1;
            }
            if p == digits_start {
                return Err(());
            }
            exponent *= sign;
        }
        self.pos = p;
        if is_float {
            let integer = &input[integer_start..integer_end];
            let fraction = &input[fraction.0..fraction.1];
            if float_is_infinite(integer, fraction, exponent) {
                return Err(()); // "Number out of range"
            }
            return Ok(Val::Float);
        }
        let text = &input[start..p];
        if text.len() > BIG_INT_CHARS_MAX {
            return Err(());
        }
        Ok(Val::Int(Int { start: start as u32, len: text.len() as u32 }))
    }
}

/// The value of an integer literal, saturated to the i128 range.
#[inline]
fn saturating_int(text: &[u8]) -> i128 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let value = if digits.len() <= 18 {
        i128::from(digits.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')))
    } else {
        let mut value: i128 = 0;
        for &d in digits {
            match value.checked_mul(10).and_then(|v| v.checked_add(i128::from(d - b'0'))) {
                Some(v) => value = v,
                None => return if negative { i128::MIN } else { i128::MAX },
            }
        }
        value
    };
    if negative {
        -value
    } else {
        value
    }
}

/// Whether msgspec turns this float literal into an infinity: the decimal value
/// 0.DIGITS x 10^(point + exponent), correctly rounded, overflows f64.
#[inline(never)]
fn float_is_infinite(integer: &[u8], fraction: &[u8], exponent: i64) -> bool {
    let integer = trim_leading_zeros(integer);
    let (digits_point, mut digits): (i64, Vec<u8>) = if integer.is_empty() {
        let trimmed = trim_leading_zeros(fraction);
        (-((fraction.len() - trimmed.len()) as i64), trimmed.to_vec())
    } else {
        let mut all = integer.to_vec();
        all.extend_from_slice(fraction);
        (integer.len() as i64, all)
    };
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return false; // zero
    }
    let point = digits_point + exponent;
    if point > 400 {
        return true;
    }
    if point < -400 {
        return false;
    }
    let text = format!("0.{}e{}", String::from_utf8_lossy(&digits), point);
    text.parse::<f64>().map_or(true, f64::is_infinite)
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[zeros..]
}
