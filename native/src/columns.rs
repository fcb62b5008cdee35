//! Byte-string columns crossing into Python and back without an object per item.

use memchr::memmem;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A read-only buffer of bytes lent by a Python object (an Arrow buffer, bytes): no copy.
pub struct Bytes(PyBuffer<u8>);

impl<'py> FromPyObject<'_, 'py> for Bytes {
    type Error = PyErr;

    fn extract(object: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let buffer = PyBuffer::<u8>::get(&object)?;
        if !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err("a column buffer must be contiguous"));
        }
        Ok(Bytes(buffer))
    }
}

impl Bytes {
    pub fn as_bytes(&self) -> &[u8] {
        let length = self.0.len_bytes();
        if length == 0 {
            return &[];
        }
        // SAFETY: the buffer is contiguous, holds `length` bytes and stays valid (and unchanged:
        // Arrow buffers and bytes are immutable) while `self` holds the Python buffer view.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, length) }
    }
}

/// A column of byte strings (None: null) as Python hands it over: a list of bytes, or an Arrow
/// `binary` array's buffers `(validity or None, int32 offsets, data or None, array offset, length)`.
#[derive(FromPyObject)]
pub enum BlobColumn<'py> {
    Arrow(Option<Bytes>, Bytes, Option<Bytes>, usize, usize),
    List(Vec<Bound<'py, PyAny>>),
}

impl BlobColumn<'_> {
    pub fn len(&self) -> usize {
        match self {
            BlobColumn::Arrow(.., length) => *length,
            BlobColumn::List(items) => items.len(),
        }
    }

    /// Each item as a slice of the Python objects' memory (None where null).
    pub fn slices(&self) -> PyResult<Vec<Option<&[u8]>>> {
        match self {
            BlobColumn::List(items) => items
                .iter()
                .map(|item| if item.is_none() { Ok(None) } else { Ok(Some(item.cast::<PyBytes>()?.as_bytes())) })
                .collect(),
            BlobColumn::Arrow(validity, offsets, data, offset, length) => {
                let (offsets, data) = (offsets.as_bytes(), data.as_ref().map_or(&[][..], |d| d.as_bytes()));
                let validity = validity.as_ref().map(|v| v.as_bytes());
                if offsets.len() < (offset + length + 1) * 4 || validity.is_some_and(|v| v.len() * 8 < offset + length) {
                    return Err(PyValueError::new_err("a binary column's buffers are shorter than its length"));
                }
                let at = |i: usize| i32::from_le_bytes(offsets[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
                (*offset..offset + length)
                    .map(|i| {
                        if validity.is_some_and(|v| v[i / 8] & (1 << (i % 8)) == 0) {
                            return Ok(None);
                        }
                        let (begin, end) = (at(i), at(i + 1));
                        data.get(begin..end)
                            .map(Some)
                            .ok_or_else(|| PyValueError::new_err("a binary column's offsets point past its data"))
                    })
                    .collect()
            }
        }
    }
}

/// The datums of an Avro container block whose `count` records each start with `marker`, each
/// behind `header` (the Confluent wire-format header, or nothing), laid end to end: `(data,
/// int32 offsets)`, the buffers of an Arrow `binary` array. The marker's first byte occurs nowhere
/// else in it, so its occurrences cannot overlap; exactly `count` of them, the first at the start,
/// means each is a record's start (anything else raises ValueError: one occurs inside a datum).
/// `order` (packed int64, a permutation of the records) gives the datums in that order instead.
#[pyfunction]
#[pyo3(signature = (block, marker, count, header, order=None))]
pub fn frame_datums<'py>(py: Python<'py>, block: &[u8], marker: &[u8], count: usize, header: &[u8],
                         order: Option<Bytes>) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    if marker.is_empty() || marker[1..].contains(&marker[0]) {
        return Err(PyValueError::new_err("the marker's first byte must occur once in it"));
    }
    let starts: Vec<usize> = py.detach(|| memmem::find_iter(block, marker).collect());
    if starts.len() != count || starts.first().is_some_and(|&s| s != 0) || (count == 0 && !block.is_empty()) {
        return Err(PyValueError::new_err(format!(
            "the marker occurs {} times where {count} records were written", starts.len())));
    }
    let size = block.len() - count * marker.len() + count * header.len();
    if size > i32::MAX as usize {
        return Err(PyValueError::new_err("the datums exceed 2 GiB"));
    }
    let order: Option<Vec<usize>> = match &order {
        None => None,
        Some(order) => {
            let order: Vec<usize> = order.as_bytes().chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
            let mut seen = vec![false; count];
            if order.len() != count || !order.iter().all(|&i| i < count && !std::mem::replace(&mut seen[i], true)) {
                return Err(PyValueError::new_err("the order is not a permutation of the records"));
            }
            Some(order)
        }
    };
    let (data, offsets) = py.detach(|| {
        let mut data = Vec::with_capacity(size);
        let mut offsets = Vec::with_capacity((count + 1) * 4);
        offsets.extend_from_slice(&0i32.to_le_bytes());
        for k in 0..count {
            let n = order.as_ref().map_or(k, |order| order[k]);
            let end = starts.get(n + 1).copied().unwrap_or(block.len());
            data.extend_from_slice(header);
            data.extend_from_slice(&block[starts[n] + marker.len()..end]);
            offsets.extend_from_slice(&(data.len() as i32).to_le_bytes());
        }
        (data, offsets)
    });
    Ok((PyBytes::new(py, &data), PyBytes::new(py, &offsets)))
}
