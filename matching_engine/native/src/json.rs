//! A JSON scanner with exactly the acceptance rules of msgspec's generic JSON decoder
//! (`msgspec.json.Decoder()`), as `protocol.codec._salvage` runs it.
//!
//! It reads one command line and keeps the top-level object's members, in order and with
//! duplicates, so `decode.rs` can replay msgspec's typed decode (which fails on the first
//! bad member) and the salvage (which reads a dict, where the last duplicate wins). The
//! elements of an array that is a member's value are kept too (a strip's `instruments`);
//! anything nested deeper is checked and skipped, never stored.
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

// Flat beside this file, where the build's `src/*.rs` watch sees them.
#[path = "json_number.rs"]
mod number;
#[path = "json_string.rs"]
mod string;

pub use number::Int;
pub(crate) use string::special_bytes;

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

/// The elements of an array that is a top-level member's value: a run of
/// `Scanner::elements`. (Empty for an array nested deeper, whose elements are not kept.)
#[derive(Clone, Copy, Debug)]
pub struct Elements {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum Val {
    Str(Str),
    Int(Int),
    Float,
    Bool(bool),
    Null,
    Array(Elements),
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
    /// The elements of the arrays among the members' values, each array's in one run.
    pub elements: Vec<Val>,
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

    /// The elements of an array among the members' values.
    #[inline]
    pub fn elements(&self, elements: Elements) -> &[Val] {
        let start = elements.start as usize;
        &self.elements[start..start + elements.len as usize]
    }

    /// Scan one line (already stripped of its trailing CR/LF) as msgspec would.
    pub fn scan(&mut self, line: &[u8]) -> Top {
        self.members.clear();
        self.elements.clear();
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
        if cursor.peek_ws()? != b'{' {
            self.value(cursor, 0)?;
            return Ok(Top::NotObject);
        }
        self.items(cursor, 1, b'}', Self::member)?;
        Ok(Top::Object)
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
            b'[' => self.array(cursor, depth),
            b'{' => self.items(cursor, depth + 1, b'}', Self::member).map(|_| Val::Object),
            _ => cursor.number(),
        }
    }

    /// Scan an array or object at the cursor's opening bracket, to its `close`: `item`
    /// scans each element or member, commas between them, none after the last.
    #[inline(never)]
    fn items(
        &mut self,
        cursor: &mut Cursor<'_>,
        depth: u32,
        close: u8,
        item: impl Fn(&mut Self, &mut Cursor<'_>, u32) -> Scan<()>,
    ) -> Scan<()> {
        if depth > NESTING_DEPTH_MAX {
            return Err(());
        }
        cursor.pos += 1;
        if cursor.peek_ws()? == close {
            cursor.pos += 1;
            return Ok(());
        }
        loop {
            item(self, cursor, depth)?; // refuses a closing bracket: no trailing comma
            match cursor.peek_ws()? {
                b',' => cursor.pos += 1,
                c if c == close => {
                    cursor.pos += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    /// Scan an array at nesting `depth`; keep its elements when it is a top-level member's
    /// value (`depth` 1).
    fn array(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<Val> {
        let start = self.elements.len();
        if depth == 1 {
            self.items(cursor, depth + 1, b']', Self::kept_element)?;
        } else {
            self.items(cursor, depth + 1, b']', Self::element)?;
        }
        let len = self.elements.len() - start;
        Ok(Val::Array(Elements { start: start as u32, len: len as u32 }))
    }

    fn element(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<()> {
        self.value(cursor, depth).map(|_| ())
    }

    /// Scan an element of a top-level member's array and keep it, a string decoded.
    fn kept_element(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<()> {
        let value = if cursor.peek_ws()? == b'"' {
            Val::Str(self.string(cursor, true)?)
        } else {
            self.value(cursor, depth)?
        };
        self.elements.push(value);
        Ok(())
    }

    /// Scan `"key": value`; keep it when it is a member of the top-level object.
    fn member(&mut self, cursor: &mut Cursor<'_>, depth: u32) -> Scan<()> {
        if cursor.peek_ws()? != b'"' {
            return Err(()); // a non-string key
        }
        let top = depth == 1;
        let key = self.string(cursor, top)?;
        if cursor.peek_ws()? != b':' {
            return Err(());
        }
        cursor.pos += 1;
        let value = self.value(cursor, depth)?;
        if top {
            self.members.push((key, value));
        }
        Ok(())
    }
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
}
