//! gpux_native: the matching engine core of `matching_engine.core` in Rust.
//!
//! `NativeEngine.apply_batch(commands)` takes JSON Lines of commands, exactly as on the
//! command log, and returns JSON Lines of events byte-identical to what
//! `matching_engine.replay.replay_lines` yields for the same bytes with the Python core,
//! for every input, malformed lines included. The state lives across calls, so a log
//! can be fed in batches (split at line ends: a batch's last line without `\n` is
//! taken as a whole line, as replay takes a file's last line).

pub mod book;
pub mod command;
pub mod decode;
pub mod encode;
pub mod engine;
mod fast;
mod invariants;
pub mod json;
mod matching;
pub mod money;
mod orders;
pub mod schema;
pub mod snapshot;
pub mod state;
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

#[cfg(feature = "python")]
mod python {
    use pyo3::exceptions::{PyMemoryError, PyValueError};
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use crate::snapshot::{EngineState, InstrumentState, OrderState};
    use crate::state::Engine;
    use crate::Core;

    /// `OrderState` of matching_engine/core/snapshot.py, field for field.
    type OrderTuple = (u64, String, String, bool, i64, i64, i64, String, Option<i64>, bool, String);
    /// `InstrumentState`, field for field.
    type InstrumentTuple = (
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        bool,
        Vec<OrderTuple>,
        Vec<OrderTuple>,
    );
    /// `EngineSnapshot` without its version, field for field; balances and supply as
    /// sorted rows rather than dicts.
    type StateTuple = (
        i64,
        u64,
        u64,
        u64,
        Vec<InstrumentTuple>,
        Vec<(String, String, i128, i128)>,
        Vec<(i64, u64, String, String)>,
        Vec<String>,
        Vec<(String, i128)>,
    );

    fn order_tuple(o: OrderState) -> OrderTuple {
        (
            o.order_id,
            o.account,
            o.client_order_id,
            o.is_buy,
            o.price,
            o.quantity,
            o.filled,
            o.time_in_force,
            o.expire_at,
            o.post_only,
            o.stp,
        )
    }

    fn order_state(t: OrderTuple) -> OrderState {
        let (
            order_id,
            account,
            client_order_id,
            is_buy,
            price,
            quantity,
            filled,
            time_in_force,
            expire_at,
            post_only,
            stp,
        ) = t;
        OrderState {
            order_id,
            account,
            client_order_id,
            is_buy,
            price,
            quantity,
            filled,
            time_in_force,
            expire_at,
            post_only,
            stp,
        }
    }

    fn state_tuple(state: EngineState) -> StateTuple {
        let instruments = state
            .instruments
            .into_iter()
            .map(|i| {
                (
                    i.symbol,
                    i.gpu,
                    i.region,
                    i.delivery_start,
                    i.delivery_hours,
                    i.tick,
                    i.max_order_quantity,
                    i.maker_fee_bps,
                    i.taker_fee_bps,
                    i.closed,
                    i.bids.into_iter().map(order_tuple).collect(),
                    i.asks.into_iter().map(order_tuple).collect(),
                )
            })
            .collect();
        (
            state.time,
            state.seq,
            state.order_counter,
            state.trade_counter,
            instruments,
            state.balances,
            state.expiries,
            state.deposit_ids,
            state.supply,
        )
    }

    fn engine_state(t: StateTuple) -> EngineState {
        let (
            time,
            seq,
            order_counter,
            trade_counter,
            instruments,
            balances,
            expiries,
            deposit_ids,
            supply,
        ) = t;
        let instruments = instruments
            .into_iter()
            .map(|i| InstrumentState {
                symbol: i.0,
                gpu: i.1,
                region: i.2,
                delivery_start: i.3,
                delivery_hours: i.4,
                tick: i.5,
                max_order_quantity: i.6,
                maker_fee_bps: i.7,
                taker_fee_bps: i.8,
                closed: i.9,
                bids: i.10.into_iter().map(order_state).collect(),
                asks: i.11.into_iter().map(order_state).collect(),
            })
            .collect();
        EngineState {
            time,
            seq,
            order_counter,
            trade_counter,
            instruments,
            balances,
            expiries,
            deposit_ids,
            supply,
        }
    }

    /// The native engine core: `apply_batch(commands: bytes) -> bytes` of JSON Lines.
    #[pyclass(module = "gpux_native")]
    struct NativeEngine {
        core: Core,
    }

    #[pymethods]
    impl NativeEngine {
        #[new]
        fn new() -> Self {
            NativeEngine { core: Core::default() }
        }

        /// Apply JSON Lines of commands; return the JSON Lines of their events.
        fn apply_batch<'py>(
            &mut self,
            py: Python<'py>,
            commands: &[u8],
        ) -> PyResult<Bound<'py, PyBytes>> {
            let mut writer = BytesWriter::new(commands.len() + commands.len() / 2)?;
            self.core.apply_batch_into(commands, |events| writer.write(events));
            writer.finish(py)
        }

        /// Balances and open orders as `Engine.final_state()`, as a JSON document.
        fn final_state(&self) -> String {
            self.core.engine.final_state_json()
        }

        /// Check every internal invariant; return the first broken one, or None.
        fn validate(&self) -> Option<String> {
            self.core.engine.validate().err()
        }

        /// `apply_batch` timed in parts: (decode seconds, apply seconds, event bytes).
        fn profile_batch(&mut self, commands: &[u8]) -> (f64, f64, usize) {
            self.core.profile_batch(commands)
        }

        /// The whole state as tuples in the fields' order of `EngineSnapshot`
        /// (matching_engine/core/snapshot.py), its version left out and its balances and
        /// supply as sorted rows: (time, seq, order_counter, trade_counter, instruments,
        /// balances, expiries, deposit_ids, supply).
        fn export_state(&self) -> StateTuple {
            state_tuple(self.core.engine.export_state())
        }

        /// An engine holding a state in `export_state`'s shape; ValueError names what in
        /// it is inconsistent.
        #[staticmethod]
        fn restore(state: StateTuple) -> PyResult<Self> {
            let engine = Engine::from_state(&engine_state(state)).map_err(PyValueError::new_err)?;
            Ok(NativeEngine { core: Core { engine, ..Core::default() } })
        }

        /// The seq of the last event (0 before any).
        #[getter]
        fn seq(&self) -> u64 {
            self.core.engine.seq
        }
    }

    /// A bytes object written in place (PyBytesWriter): the events are copied once, from
    /// the engine's buffer into the result, which grows by doubling without a copy.
    struct BytesWriter {
        writer: *mut ffi::compat::PyBytesWriter,
        len: usize,
        capacity: usize,
        failed: bool,
    }

    impl BytesWriter {
        fn new(capacity: usize) -> PyResult<Self> {
            let capacity = capacity.max(4096);
            // SAFETY: called with the GIL held (we are inside a pymethod).
            let writer = unsafe { ffi::compat::PyBytesWriter_Create(capacity as ffi::Py_ssize_t) };
            if writer.is_null() {
                return Err(PyMemoryError::new_err("cannot allocate the events"));
            }
            Ok(BytesWriter { writer, len: 0, capacity, failed: false })
        }

        fn write(&mut self, bytes: &[u8]) {
            if self.failed {
                return;
            }
            let needed = self.len + bytes.len();
            if needed > self.capacity {
                let capacity = needed.max(self.capacity * 2);
                // SAFETY: `writer` is live; Resize keeps the first `len` bytes.
                let status = unsafe {
                    ffi::compat::PyBytesWriter_Resize(self.writer, capacity as ffi::Py_ssize_t)
                };
                if status < 0 {
                    self.failed = true;
                    return;
                }
                self.capacity = capacity;
            }
            // SAFETY: the writer's buffer holds `capacity` >= `len + bytes.len()` bytes.
            unsafe {
                let data = ffi::compat::PyBytesWriter_GetData(self.writer) as *mut u8;
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(self.len), bytes.len());
            }
            self.len = needed;
        }

        fn finish(mut self, py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
            if self.failed {
                return Err(PyErr::fetch(py));
            }
            let writer = std::mem::replace(&mut self.writer, std::ptr::null_mut());
            // SAFETY: `writer` is live and `len` bytes of it are written; Finish consumes it.
            let bytes = unsafe {
                let object =
                    ffi::compat::PyBytesWriter_FinishWithSize(writer, self.len as ffi::Py_ssize_t);
                Bound::from_owned_ptr_or_err(py, object)?
            };
            Ok(bytes.cast_into::<PyBytes>()?)
        }
    }

    impl Drop for BytesWriter {
        fn drop(&mut self) {
            if !self.writer.is_null() {
                // SAFETY: a live writer that was not finished; the GIL is held by the caller.
                unsafe { ffi::compat::PyBytesWriter_Discard(self.writer) };
            }
        }
    }

    #[pymodule]
    fn gpux_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<NativeEngine>()?;
        Ok(())
    }
}
