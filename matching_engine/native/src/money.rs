//! Exact fixed-point money, as protocol/money.py: USDC in integer micro-USDC.

pub const MICRO_PER_USDC: i128 = 1_000_000;
pub const MICRO_MAX: i128 = 1_000_000_000_000_000_000;
const USDC_DECIMALS: usize = 6;

/// `parse_micro`: `[0-9]{1,19}(\.[0-9]{1,32})?`, at most 6 decimals, at most MICRO_MAX.
pub fn parse_micro(text: &[u8]) -> Option<i128> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    if whole.is_empty() || whole.len() > 19 || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut micro: i128 = 0;
    for &d in whole {
        micro = micro * 10 + i128::from(d - b'0');
    }
    micro *= MICRO_PER_USDC;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || fraction.len() > 32 || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if fraction.len() > USDC_DECIMALS {
            return None;
        }
        let mut part: i128 = 0;
        for i in 0..USDC_DECIMALS {
            part = part * 10 + fraction.get(i).map_or(0, |&d| i128::from(d - b'0'));
        }
        micro += part;
    }
    if micro > MICRO_MAX {
        return None;
    }
    Some(micro)
}

/// `parse_positive_micro`: a parse_micro amount above zero.
pub fn parse_positive_micro(text: &[u8]) -> Option<i128> {
    parse_micro(text).filter(|&micro| micro != 0)
}

/// `parse_token_amount` of a string: ASCII digits only, 1 to 19 of them, 1..=MICRO_MAX.
pub fn parse_token_text(text: &[u8]) -> Option<i128> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = text.iter().fold(0i128, |v, &d| v * 10 + i128::from(d - b'0'));
    parse_token_int(value)
}

/// `parse_token_amount` of an integer: 1..=MICRO_MAX.
pub fn parse_token_int(value: i128) -> Option<i128> {
    (1..=MICRO_MAX).contains(&value).then_some(value)
}

/// `format_micro`: the canonical decimal string, no trailing zeros, no dot when whole.
pub fn write_micro(out: &mut Vec<u8>, micro: i128) {
    match u64::try_from(micro) {
        Ok(small) => {
            let mut buf = [0u8; 32];
            let start = format_micro_u64(&mut buf, small);
            out.extend_from_slice(&buf[start..]);
        }
        Err(_) => write_micro_wide(out, micro),
    }
}

/// Write the canonical decimal of a non-negative micro amount at the end of `buf`; return
/// where it starts.
#[inline(always)]
pub fn format_micro_u64(buf: &mut [u8; 32], micro: u64) -> usize {
    let (whole, fraction) = (micro / 1_000_000, (micro % 1_000_000) as u32);
    let mut end = buf.len();
    if fraction != 0 {
        let (digits, kept) = fraction_digits(fraction);
        buf[end - kept..].copy_from_slice(&digits[..kept]);
        end -= kept + 1;
        buf[end] = b'.';
    }
    let mut whole_digits = [0u8; 20];
    let start = format_u64(&mut whole_digits, whole);
    let len = 20 - start;
    buf[end - len..end].copy_from_slice(&whole_digits[start..]);
    end - len
}

fn write_micro_wide(out: &mut Vec<u8>, micro: i128) {
    if micro < 0 {
        out.push(b'-');
    }
    let magnitude = micro.unsigned_abs();
    let whole = magnitude / MICRO_PER_USDC as u128;
    let fraction = (magnitude % MICRO_PER_USDC as u128) as u32;
    write_u128(out, whole);
    if fraction != 0 {
        let (digits, kept) = fraction_digits(fraction);
        out.push(b'.');
        out.extend_from_slice(&digits[..kept]);
    }
}

/// The six decimals of a fraction of a USDC (in micro-USDC, 1 to 999999), and how many of
/// them to write: all but the trailing zeros.
#[inline(always)]
fn fraction_digits(fraction: u32) -> ([u8; USDC_DECIMALS], usize) {
    let mut digits = [b'0'; USDC_DECIMALS];
    let mut rest = fraction;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    (digits, USDC_DECIMALS - digits.iter().rev().take_while(|&&d| d == b'0').count())
}

/// Two-digit pairs "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Write the decimal digits of `value` at the end of `buf`; return where they start.
#[inline(always)]
pub fn format_u64(buf: &mut [u8; 20], mut value: u64) -> usize {
    let mut i = buf.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + value as u8;
    }
    i
}

#[inline]
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut buf = [0u8; 20];
    let start = format_u64(&mut buf, value);
    out.extend_from_slice(&buf[start..]);
}

pub fn write_u128(out: &mut Vec<u8>, value: u128) {
    if let Ok(small) = u64::try_from(value) {
        return write_u64(out, small);
    }
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let mut rest = value;
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub fn write_i128(out: &mut Vec<u8>, value: i128) {
    if value < 0 {
        out.push(b'-');
    }
    write_u128(out, value.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micro(text: &str) -> Option<i128> {
        parse_micro(text.as_bytes())
    }

    fn formatted(value: i128) -> String {
        let mut out = Vec::new();
        write_micro(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_like_protocol_money() {
        assert_eq!(micro("2.15"), Some(2_150_000));
        assert_eq!(micro("2.150"), Some(2_150_000));
        assert_eq!(micro("1000"), Some(1_000_000_000));
        assert_eq!(micro("0"), Some(0));
        assert_eq!(micro("2.1500001"), None);
        assert_eq!(micro("1.0000000"), None);
        assert_eq!(micro("-1"), None);
        assert_eq!(micro("1e3"), None);
        assert_eq!(micro(".5"), None);
        assert_eq!(micro("5."), None);
        assert_eq!(micro("1000000000000"), Some(MICRO_MAX));
        assert_eq!(micro("1000000000000.000001"), None);
        assert_eq!(micro("0000000000000000001"), Some(1_000_000));
        assert_eq!(micro("00000000000000000001"), None);
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(formatted(2_150_000), "2.15");
        assert_eq!(formatted(1_000_000_000), "1000");
        assert_eq!(formatted(500_000), "0.5");
        assert_eq!(formatted(1), "0.000001");
        assert_eq!(formatted(-1), "-0.000001");
        assert_eq!(formatted(0), "0");
        assert_eq!(formatted(10_000_000), "10");
        assert_eq!(formatted(10_050_000), "10.05");
        assert_eq!(formatted(MICRO_MAX), "1000000000000");
        assert_eq!(formatted(u64::MAX as i128 + 1), "18446744073709.551616");
        assert_eq!(formatted(-1_500_000), "-1.5");
    }
}
