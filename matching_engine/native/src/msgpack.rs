//! The part of MessagePack that the engine snapshot uses, written as msgspec writes it:
//! every integer, string, array and map header in its shortest form. The reader takes any
//! form of each, as msgspec does, and says what it found where it wanted something else.

/// What a reader found wrong, in words for a person.
pub type Fault = String;

/// The forms of a header of a string, an array or a map: `fixed | len` for a length below
/// `fixed_max`, else a marker and the length in 8 (strings only), 16 or 32 bits.
struct Header {
    fixed: u8,
    fixed_max: usize,
    of8: Option<u8>,
    of16: u8,
    of32: u8,
}

const STR: Header = Header { fixed: 0xa0, fixed_max: 32, of8: Some(0xd9), of16: 0xda, of32: 0xdb };
const ARRAY: Header = Header { fixed: 0x90, fixed_max: 16, of8: None, of16: 0xdc, of32: 0xdd };
const MAP: Header = Header { fixed: 0x80, fixed_max: 16, of8: None, of16: 0xde, of32: 0xdf };

#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn nil(&mut self) {
        self.out.push(0xc0);
    }

    pub fn bool(&mut self, value: bool) {
        self.out.push(if value { 0xc3 } else { 0xc2 });
    }

    pub fn uint(&mut self, value: u64) {
        if value < 0x80 {
            self.out.push(value as u8);
        } else if value <= 0xff {
            self.out.extend_from_slice(&[0xcc, value as u8]);
        } else if value <= 0xffff {
            self.out.push(0xcd);
            self.out.extend_from_slice(&(value as u16).to_be_bytes());
        } else if value <= 0xffff_ffff {
            self.out.push(0xce);
            self.out.extend_from_slice(&(value as u32).to_be_bytes());
        } else {
            self.out.push(0xcf);
            self.out.extend_from_slice(&value.to_be_bytes());
        }
    }

    pub fn int(&mut self, value: i64) {
        if value >= 0 {
            self.uint(value as u64);
        } else if value >= -32 {
            self.out.push(value as u8);
        } else if value >= i64::from(i8::MIN) {
            self.out.extend_from_slice(&[0xd0, value as u8]);
        } else if value >= i64::from(i16::MIN) {
            self.out.push(0xd1);
            self.out.extend_from_slice(&(value as i16).to_be_bytes());
        } else if value >= i64::from(i32::MIN) {
            self.out.push(0xd2);
            self.out.extend_from_slice(&(value as i32).to_be_bytes());
        } else {
            self.out.push(0xd3);
            self.out.extend_from_slice(&value.to_be_bytes());
        }
    }

    /// An integer of the range msgspec writes, -2^63 to 2^64 - 1; Err outside it.
    pub fn wide(&mut self, value: i128) -> Result<(), Fault> {
        if let Ok(value) = u64::try_from(value) {
            self.uint(value);
        } else if let Ok(value) = i64::try_from(value) {
            self.int(value);
        } else {
            return Err(format!("{value} is beyond the integers a snapshot holds"));
        }
        Ok(())
    }

    /// A string, from bytes that are UTF-8.
    pub fn str(&mut self, utf8: &[u8]) {
        self.header(&STR, utf8.len());
        self.out.extend_from_slice(utf8);
    }

    pub fn array(&mut self, len: usize) {
        self.header(&ARRAY, len);
    }

    pub fn map(&mut self, len: usize) {
        self.header(&MAP, len);
    }

    /// A header in its shortest form.
    fn header(&mut self, header: &Header, len: usize) {
        match header.of8 {
            _ if len < header.fixed_max => self.out.push(header.fixed | len as u8),
            Some(of8) if len <= 0xff => self.out.extend_from_slice(&[of8, len as u8]),
            _ if len <= 0xffff => {
                self.out.push(header.of16);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                let len = u32::try_from(len).expect("fewer than 2^32 items");
                self.out.push(header.of32);
                self.out.extend_from_slice(&len.to_be_bytes());
            }
        }
    }
}

pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Ok when every byte was read.
    pub fn finish(&self) -> Result<(), Fault> {
        match self.data.len() - self.pos {
            0 => Ok(()),
            extra => Err(format!("{extra} bytes follow the end of the data")),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Fault> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            let wanted = self.pos.saturating_add(len) - self.data.len();
            let plural = if wanted == 1 { "" } else { "s" };
            return Err(format!("the data is cut short, {wanted} more byte{plural} wanted"));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn marker(&mut self) -> Result<u8, Fault> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// A big-endian unsigned integer of `len` bytes (1 to 8).
    fn be(&mut self, len: usize) -> Result<u64, Fault> {
        Ok(self.take(len)?.iter().fold(0, |value, &byte| value << 8 | u64::from(byte)))
    }

    pub fn int(&mut self) -> Result<i128, Fault> {
        let marker = self.marker()?;
        Ok(match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc => i128::from(self.be(1)?),
            0xcd => i128::from(self.be(2)?),
            0xce => i128::from(self.be(4)?),
            0xcf => i128::from(self.be(8)?),
            0xd0 => i128::from(self.be(1)? as u8 as i8),
            0xd1 => i128::from(self.be(2)? as u16 as i16),
            0xd2 => i128::from(self.be(4)? as u32 as i32),
            0xd3 => i128::from(self.be(8)? as i64),
            _ => return Err(unexpected("an integer", marker)),
        })
    }

    /// An integer that fits `T`.
    pub fn int_in<T: TryFrom<i128>>(&mut self) -> Result<T, Fault> {
        let value = self.int()?;
        T::try_from(value).map_err(|_| format!("{value} is out of range"))
    }

    /// Nil, or an integer that fits `T`.
    pub fn opt_int_in<T: TryFrom<i128>>(&mut self) -> Result<Option<T>, Fault> {
        if self.peek() == Some(0xc0) {
            self.pos += 1;
            return Ok(None);
        }
        self.int_in().map(Some)
    }

    pub fn bool(&mut self) -> Result<bool, Fault> {
        match self.marker()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            marker => Err(unexpected("true or false", marker)),
        }
    }

    /// The length a header of the form `header` gives; `wanted` names it in a fault.
    fn length(&mut self, header: &Header, wanted: &str) -> Result<usize, Fault> {
        let marker = self.marker()?;
        let fixed_mask = !(header.fixed_max as u8 - 1);
        Ok(match marker {
            _ if marker & fixed_mask == header.fixed => usize::from(marker & !fixed_mask),
            _ if Some(marker) == header.of8 => self.be(1)? as usize,
            _ if marker == header.of16 => self.be(2)? as usize,
            _ if marker == header.of32 => self.be(4)? as usize,
            _ => return Err(unexpected(wanted, marker)),
        })
    }

    /// A string (checked UTF-8).
    pub fn str(&mut self) -> Result<&'a str, Fault> {
        let len = self.length(&STR, "a string")?;
        std::str::from_utf8(self.take(len)?).map_err(|_| "a string that is not UTF-8".into())
    }

    /// An array's length; its items follow.
    pub fn array(&mut self) -> Result<usize, Fault> {
        let len = self.length(&ARRAY, "an array")?;
        self.items_fit(len)
    }

    /// An array of exactly `len` items; they follow.
    pub fn array_of(&mut self, len: usize) -> Result<(), Fault> {
        match self.array()? {
            found if found == len => Ok(()),
            found => Err(format!("an array of {found} items where {len} belong")),
        }
    }

    /// A map's length; its keys and values follow, in turn.
    pub fn map(&mut self) -> Result<usize, Fault> {
        let len = self.length(&MAP, "a map")?;
        self.items_fit(2 * len).map(|_| len)
    }

    /// `count`, when that many items (a byte each at least) fit in what is left.
    fn items_fit(&self, count: usize) -> Result<usize, Fault> {
        let left = self.data.len() - self.pos;
        if count > left {
            return Err(format!("{count} items announced in {left} bytes"));
        }
        Ok(count)
    }

    /// Read past one value of any kind, nested ones included.
    pub fn skip(&mut self) -> Result<(), Fault> {
        let mut values = 1usize;
        while values > 0 {
            values -= 1;
            let marker = self.marker()?;
            let (len, items) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
                0x90..=0x9f => (0, usize::from(marker & 0x0f)),
                0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
                0xcc | 0xd0 | 0xd4 => (1 + usize::from(marker == 0xd4), 0),
                0xcd | 0xd1 | 0xd5 => (2 + usize::from(marker == 0xd5), 0),
                0xca | 0xce | 0xd2 | 0xd6 => (4 + usize::from(marker == 0xd6), 0),
                0xcb | 0xcf | 0xd3 | 0xd7 => (8 + usize::from(marker == 0xd7), 0),
                0xd8 => (17, 0),
                0xc4 | 0xd9 => (self.be(1)? as usize, 0),
                0xc5 | 0xda => (self.be(2)? as usize, 0),
                0xc6 | 0xdb => (self.be(4)? as usize, 0),
                0xc7 => (1 + self.be(1)? as usize, 0),
                0xc8 => (1 + self.be(2)? as usize, 0),
                0xc9 => (1 + self.be(4)? as usize, 0),
                0xdc => (0, self.be(2)? as usize),
                0xdd => (0, self.be(4)? as usize),
                0xde => (0, 2 * self.be(2)? as usize),
                0xdf => (0, 2 * self.be(4)? as usize),
                _ => return Err(unexpected("a value", marker)),
            };
            self.take(len)?;
            values += self.items_fit(items)?;
            self.items_fit(values)?;
        }
        Ok(())
    }
}

/// "expected W, found K" for the kind K of value a marker starts.
fn unexpected(wanted: &str, marker: u8) -> Fault {
    let found = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "binary data",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension value",
        _ => "the unused marker 0xc1",
    };
    format!("expected {wanted}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut writer = Writer::default();
        write(&mut writer);
        writer.out
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn writes_integers_as_msgspec_does() {
        // msgspec.msgpack.encode(value).hex() for each value.
        let cases: [(i128, &str); 20] = [
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (4294967295, "ceffffffff"),
            (4294967296, "cf0000000100000000"),
            (18446744073709551615, "cfffffffffffffffff"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-128, "d080"),
            (-129, "d1ff7f"),
            (-32768, "d18000"),
            (-32769, "d2ffff7fff"),
            (-2147483648, "d280000000"),
            (-2147483649, "d3ffffffff7fffffff"),
            (-9223372036854775808, "d38000000000000000"),
        ];
        for (value, expected) in cases {
            assert_eq!(written(|w| w.wide(value).unwrap()), hex(expected), "{value}");
            assert_eq!(Reader::new(&hex(expected)).int(), Ok(value));
        }
        assert!(Writer::default().wide(1 << 64).is_err());
        assert!(Writer::default().wide(-(1 << 63) - 1).is_err());
    }

    #[test]
    fn writes_headers_as_msgspec_does() {
        assert_eq!(written(|w| w.str(&[b'a'; 31]))[..1], hex("bf"));
        assert_eq!(written(|w| w.str(&[b'a'; 32]))[..2], hex("d920"));
        assert_eq!(written(|w| w.str(&[b'a'; 256]))[..3], hex("da0100"));
        assert_eq!(written(|w| w.array(15)), hex("9f"));
        assert_eq!(written(|w| w.array(16)), hex("dc0010"));
        assert_eq!(written(|w| w.map(15)), hex("8f"));
        assert_eq!(written(|w| w.map(16)), hex("de0010"));
        assert_eq!(written(|w| w.map(70000)), hex("df00011170"));
    }

    #[test]
    fn skips_any_value_and_refuses_what_does_not_fit() {
        // [1.5, {"k": b"\x00"}, ext8, nil] then 0x07.
        let data = hex("94cb3ff800000000000081a16bc40100c7010100c007");
        let mut reader = Reader::new(&data);
        reader.skip().unwrap();
        assert_eq!(reader.int(), Ok(7));
        reader.finish().unwrap();
        assert!(Reader::new(&hex("dd7fffffff")).skip().is_err());
        assert!(Reader::new(&hex("a5616263")).str().is_err());
        assert_eq!(
            Reader::new(&hex("a3616263")).int(),
            Err("expected an integer, found a string".into())
        );
    }
}
