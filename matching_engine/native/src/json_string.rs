//! Strings as msgspec reads them: raw control characters refused, the JSON escapes
//! decoded, lone UTF-16 surrogates and invalid UTF-8 refused.

use super::{Cursor, Scan, Scanner, Str};

impl Scanner {
    /// Scan a string at the cursor's `"`; keep its decoded bytes when `keep` (else the
    /// returned span is meaningless, the string is only checked).
    #[inline]
    pub(super) fn string(&mut self, cursor: &mut Cursor<'_>, keep: bool) -> Scan<Str> {
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
