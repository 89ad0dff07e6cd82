//! The Python module `gpux_native`: the class `NativeEngine` over a `Core`, and the class
//! `NativeIndexCalculator` over an `index::IndexCalculator`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyMemoryError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::index::{IndexCalculator, IndexError};
use crate::Core;

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

    /// The whole state in the snapshot format of matching_engine/core/snapshot.py, byte
    /// for byte what the Python core writes for the same state; OverflowError when an
    /// amount is beyond what the format holds, as the Python core raises.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let snapshot = self.core.snapshot().map_err(PyOverflowError::new_err)?;
        Ok(PyBytes::new(py, &snapshot))
    }

    /// An engine holding the state of a snapshot of either core; ValueError says what in
    /// it is wrong.
    #[staticmethod]
    fn restore(snapshot: &[u8]) -> PyResult<Self> {
        Ok(NativeEngine { core: Core::restore(snapshot).map_err(PyValueError::new_err)? })
    }

    /// The seq of the last event (0 before any).
    #[getter]
    fn seq(&self) -> u64 {
        self.core.engine.seq
    }
}

/// The bytes of each item of `list` (TypeError for one that is not bytes), without a
/// reference taken to each: the list holds them while it is borrowed.
fn list_bytes<'a>(list: &'a Bound<'_, PyList>) -> PyResult<Vec<&'a [u8]>> {
    let size = list.len();
    let mut items = Vec::with_capacity(size);
    for index in 0..size {
        // SAFETY: `index` is below the list's length, the GIL is held and no Python code runs
        // until the slices are dropped, so the list and its items stay as they are; the
        // item is checked to be bytes before its buffer is read.
        let bytes = unsafe {
            let item = ffi::PyList_GET_ITEM(list.as_ptr(), index as ffi::Py_ssize_t);
            if ffi::PyBytes_Check(item) == 0 {
                return Err(PyTypeError::new_err(format!("record {index} is not bytes")));
            }
            let data = ffi::PyBytes_AsString(item).cast::<u8>();
            std::slice::from_raw_parts(data, ffi::PyBytes_Size(item) as usize)
        };
        items.push(bytes);
    }
    Ok(items)
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

create_exception!(
    gpux_native,
    IndexSeqGapError,
    PyException,
    "index.errors.SeqGapError's case: args (expected_seq, got_seq in decimal digits)."
);
create_exception!(
    gpux_native,
    IndexEventError,
    PyException,
    "index.errors.EventError's case: args (message, seq or None)."
);

/// The index calculator of `index/calculator.py`: `feed(records)` of encoded events returns
/// the values released, as tuples in `index.value.IndexValue`'s field order.
#[pyclass(module = "gpux_native", unsendable)]
struct NativeIndexCalculator {
    calculator: IndexCalculator,
}

#[pymethods]
impl NativeIndexCalculator {
    /// `event_types`: `protocol.events.EVENT_TYPES`' tags; `prefix_bytes`:
    /// `index.events.PREFIX_BYTES`, how many first bytes tell them apart.
    #[new]
    fn new(event_types: Vec<String>, prefix_bytes: usize) -> Self {
        let tags: Vec<&[u8]> = event_types.iter().map(|tag| tag.as_bytes()).collect();
        NativeIndexCalculator { calculator: IndexCalculator::new(&tags, prefix_bytes) }
    }

    /// Apply the next encoded events (an iterable of bytes); return the values released.
    /// IndexSeqGapError or IndexEventError when the log cannot be followed.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = match records.cast::<PyList>() {
            Ok(list) => list.clone(),
            Err(_) => PyList::new(py, records.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
        };
        let records = list_bytes(&list)?;
        let values = self.calculator.feed(&records).map_err(|error| match error {
            IndexError::SeqGap { expected, got } => IndexSeqGapError::new_err((expected, got)),
            IndexError::Event { message, seq } => IndexEventError::new_err((message, seq)),
        })?;
        let rows = PyList::empty(py);
        for value in values {
            let (gpu, region) = self.calculator.series_key(value.series);
            rows.append((
                std::str::from_utf8(gpu).expect("decoded as UTF-8"),
                std::str::from_utf8(region).expect("decoded as UTF-8"),
                value.minute_ns,
                value.value_micro,
                value.source.name(),
                value.trade_count,
                value.volume,
                value.instrument_count,
                value.sufficient,
                PyBytes::new(py, &value.inputs_hash),
                value.last_seq,
            ))?;
        }
        Ok(rows)
    }

    /// The seq of the last event fed (0 before any).
    #[getter]
    fn seq(&self) -> i128 {
        self.calculator.seq()
    }
}

#[pymodule]
fn gpux_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_class::<NativeIndexCalculator>()?;
    m.add("IndexSeqGapError", m.py().get_type::<IndexSeqGapError>())?;
    m.add("IndexEventError", m.py().get_type::<IndexEventError>())?;
    Ok(())
}
