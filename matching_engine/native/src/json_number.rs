//! Numbers as msgspec's `parse_number_inline` reads them: strict JSON, floats checked for
//! overflow, integers kept as the span of their literal.

use super::{Cursor, Scan, Val};

/// The longest integer literal (sign included) that msgspec turns into a Python int.
const BIG_INT_CHARS_MAX: usize = 4300;

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

impl Cursor<'_> {
    /// Scan a number as msgspec's `parse_number_inline` does.
    #[inline(always)]
    pub(super) fn number(&mut self) -> Scan<Val> {
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
