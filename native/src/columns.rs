//! Byte-string columns crossing into Python and back without an object per item.

use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A column of byte strings (None: null) as Python hands it over: a list of bytes, or an Arrow
/// `binary` array's buffers `(validity or None, int32 offsets, data, array offset, length)`.
#[derive(FromPyObject)]
pub enum BlobColumn<'py> {
    Arrow(Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>, usize, usize),
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
#[pyfunction]
pub fn frame_datums<'py>(py: Python<'py>, block: &[u8], marker: &[u8], count: usize, header: &[u8]
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
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
    let (data, offsets) = py.detach(|| {
        let mut data = Vec::with_capacity(size);
        let mut offsets = Vec::with_capacity((count + 1) * 4);
        offsets.extend_from_slice(&0i32.to_le_bytes());
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(block.len());
            data.extend_from_slice(header);
            data.extend_from_slice(&block[start + marker.len()..end]);
            offsets.extend_from_slice(&(data.len() as i32).to_le_bytes());
        }
        (data, offsets)
    });
    Ok((PyBytes::new(py, &data), PyBytes::new(py, &offsets)))
}
