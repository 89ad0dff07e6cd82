//! gpux_native: the matching engine core of `matching_engine.core` in Rust.
//!
//! `NativeEngine.apply_batch(commands)` takes JSON Lines of commands, exactly as on the
//! command log, and returns JSON Lines of events byte-identical to what
//! `matching_engine.replay.replay_lines` yields for the same bytes with the Python core,
//! for every input, malformed lines included. The state lives across calls, so a log
//! can be fed in batches (split at line ends: a batch's last line without `\n` is
//! taken as a whole line, as replay takes a file's last line).
//!
//! `NativeEngine.snapshot()` and `NativeEngine.restore(snapshot)` write and read the engine
//! snapshot of matching_engine/core/snapshot.py (`snapshot.rs`), byte for byte as the
//! Python core does, so either core restores the other's snapshots.
//!
//! `NativeIndexCalculator.feed(records)` is the price index calculator of
//! `index/calculator.py` (`index.rs`): the same values and errors for the same event records.

pub mod book;
mod capture;
pub mod command;
pub mod decode;
mod delivery;
pub mod encode;
pub mod engine;
pub mod expiries;
mod fast;
pub mod index;
mod index_book;
pub mod index_events;
mod invariants;
pub mod json;
mod matching;
pub mod money;
pub mod msgpack;
pub mod ordered_map;
mod orders;
#[cfg(feature = "python")]
mod python;
pub mod schema;
pub mod snapshot;
pub mod state;
mod strips;
mod views;

use decode::Decoder;
use state::Engine;

/// The decoder and the engine: bytes of commands in, bytes of events out.
pub struct Core {
    pub decoder: Decoder,
    pub engine: Engine,
}

impl Default for Core {
    fn default() -> Self {
        Core { decoder: Decoder::default(), engine: Engine::new() }
    }
}

/// Python's `bytes.isspace` set, what `line.strip()` strips.
#[inline]
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Events are handed out in pieces of about this size, so the buffer they are written
/// to stays in cache and a big batch does not build its output twice.
const FLUSH_BYTES: usize = 1 << 20;

impl Core {
    /// A core holding the state of a snapshot (matching_engine/core/snapshot.py's format,
    /// of either core); Err says what in it is wrong.
    pub fn restore(snapshot: &[u8]) -> Result<Core, String> {
        let engine = Engine::restore(snapshot::decode(snapshot)?)?;
        Ok(Core { decoder: Decoder::default(), engine })
    }

    /// The whole state as a snapshot, byte for byte what the Python core writes for the same
    /// state; Err names an amount beyond what the format holds.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        snapshot::encode(&self.engine.capture())
    }

    /// Apply every non-blank line as `replay_lines` does; return the events' JSON Lines.
    pub fn apply_batch(&mut self, commands: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.apply_batch_into(commands, |events| out.extend_from_slice(events));
        out
    }

    /// `apply_batch`, handing the events' JSON Lines to `sink` piece by piece, in order.
    pub fn apply_batch_into(&mut self, commands: &[u8], mut sink: impl FnMut(&[u8])) {
        for line in lines(commands) {
            if let Some(line) = command_line(line) {
                let command = self.decoder.decode(line);
                self.engine.apply(&command);
                if self.engine.events.out.len() >= FLUSH_BYTES {
                    sink(&self.engine.events.out);
                    self.engine.events.out.clear();
                }
            }
        }
        sink(&self.engine.events.out);
        self.engine.events.out.clear();
    }

    /// `apply_batch` with a timing breakdown: seconds spent splitting and decoding lines,
    /// and applying them (matching and encoding events), and the events' size. Profiling.
    pub fn profile_batch(&mut self, commands: &[u8]) -> (f64, f64, usize) {
        use std::time::{Duration, Instant};
        let (mut decoding, mut applying, mut size) = (Duration::ZERO, Duration::ZERO, 0);
        for line in lines(commands) {
            let start = Instant::now();
            if let Some(line) = command_line(line) {
                let command = self.decoder.decode(line);
                let decoded = Instant::now();
                self.engine.apply(&command);
                applying += decoded.elapsed();
                decoding += decoded - start;
                if self.engine.events.out.len() >= FLUSH_BYTES {
                    size += self.engine.events.out.len();
                    self.engine.events.out.clear();
                }
            }
        }
        size += self.engine.events.out.len();
        self.engine.events.out.clear();
        (decoding.as_secs_f64(), applying.as_secs_f64(), size)
    }
}

/// The lines of `commands`, split at LF (the last one may lack it).
#[inline]
fn lines(commands: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', commands);
    std::iter::from_fn(move || {
        if start > commands.len() {
            return None;
        }
        let end = ends.next().unwrap_or(commands.len());
        let line = &commands[start..end];
        start = end + 1;
        Some(line)
    })
}

/// A line as `replay_lines` takes it: None when blank (`line.strip()` is empty), else
/// without its trailing CRs and LFs.
#[inline]
fn command_line(line: &[u8]) -> Option<&[u8]> {
    if line.iter().all(|&b| is_py_space(b)) {
        return None;
    }
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\r' || line[end - 1] == b'\n') {
        end -= 1;
    }
    Some(&line[..end])
}
