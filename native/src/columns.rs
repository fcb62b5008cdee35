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

/// Avro's zig-zag varint at `*pos`, which moves past it.
fn read_long(data: &[u8], pos: &mut usize) -> PyResult<i64> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let byte = *data.get(*pos).ok_or_else(|| unfit("a truncated varint"))?;
        if shift > 63 {
            return Err(unfit("an overlong varint"));
        }
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte < 0x80 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
}

fn read_bytes<'a>(data: &'a [u8], pos: &mut usize) -> PyResult<&'a [u8]> {
    let size = read_long(data, pos)?;
    let end = usize::try_from(size).ok().and_then(|s| pos.checked_add(s)).filter(|&e| e <= data.len())
        .ok_or_else(|| unfit("a truncated byte string"))?;
    let bytes = &data[*pos..end];
    *pos = end;
    Ok(bytes)
}

fn unfit(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what} in the writer's output"))
}

/// The data of each block of an Avro object container file (null codec), checked: the magic, the
/// codec, every block's sync marker, and `count` records in all.
fn container_blocks(data: &[u8], count: usize) -> PyResult<Vec<&[u8]>> {
    if !data.starts_with(b"Obj\x01") {
        return Err(unfit("no Avro container file"));
    }
    let mut pos = 4;
    loop {
        let mut entries = read_long(data, &mut pos)?;
        if entries == 0 {
            break;
        }
        if entries < 0 {
            entries = -entries;
            read_long(data, &mut pos)?; // the block's size in bytes
        }
        for _ in 0..entries {
            let key = read_bytes(data, &mut pos)?;
            let value = read_bytes(data, &mut pos)?;
            if key == b"avro.codec" && value != b"null" {
                return Err(unfit(&format!("the codec {:?}", String::from_utf8_lossy(value))));
            }
        }
    }
    let sync = data.get(pos..pos + 16).ok_or_else(|| unfit("a truncated header"))?;
    pos += 16;
    let (mut blocks, mut records) = (Vec::new(), 0usize);
    while pos < data.len() {
        let rows = read_long(data, &mut pos)?;
        let block = read_bytes(data, &mut pos)?;
        if rows < 0 {
            return Err(unfit("a negative block count"));
        }
        if data.get(pos..pos + 16) != Some(sync) {
            return Err(unfit("a block without the sync marker"));
        }
        pos += 16;
        records += rows as usize;
        blocks.push(block);
    }
    if records != count {
        return Err(unfit(&format!("{records} records instead of {count}")));
    }
    Ok(blocks)
}

/// The datums of the Avro object container file `container` (null codec) whose `count` records
/// each start with `marker`, each behind `header` (the Confluent wire-format header, or nothing),
/// laid end to end: `(data, int32 offsets)`, the buffers of an Arrow `binary` array.
///
/// The marker's first byte occurs nowhere else in it, so its occurrences cannot overlap; exactly
/// `count` of them, each block starting with one, means each is a record's start (anything else
/// raises ValueError: one occurs inside a datum). A malformed container raises ValueError too.
/// `order` (packed int64, a permutation of the records) gives the datums in that order instead.
#[pyfunction]
#[pyo3(signature = (container, marker, count, header, order=None))]
pub fn frame_datums<'py>(py: Python<'py>, container: Bytes, marker: &[u8], count: usize, header: &[u8],
                         order: Option<Bytes>) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    if marker.is_empty() || marker[1..].contains(&marker[0]) {
        return Err(PyValueError::new_err("the marker's first byte must occur once in it"));
    }
    let blocks = container_blocks(container.as_bytes(), count)?;
    // every record as (start, end) in its block: from just after its marker to the next marker
    let records: Vec<&[u8]> = py.detach(|| {
        let mut records = Vec::with_capacity(count);
        for block in &blocks {
            let starts: Vec<usize> = memmem::find_iter(block, marker).collect();
            if starts.first().is_some_and(|&s| s != 0) || (starts.is_empty() && !block.is_empty()) {
                return Err(starts.len());
            }
            for (n, &start) in starts.iter().enumerate() {
                records.push(&block[start + marker.len()..starts.get(n + 1).copied().unwrap_or(block.len())]);
            }
        }
        Ok(records)
    }).map_err(|_| PyValueError::new_err("the marker occurs inside a datum"))?;
    if records.len() != count {
        return Err(PyValueError::new_err(format!(
            "the marker occurs {} times where {count} records were written", records.len())));
    }
    let size = records.iter().map(|r| r.len() + header.len()).sum::<usize>();
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
            data.extend_from_slice(header);
            data.extend_from_slice(records[order.as_ref().map_or(k, |order| order[k])]);
            offsets.extend_from_slice(&(data.len() as i32).to_le_bytes());
        }
        (data, offsets)
    });
    Ok((PyBytes::new(py, &data), PyBytes::new(py, &offsets)))
}

/// Whether every string of an Arrow `string` array (its int32 offsets and data, from its array
/// offset, `length` strings) is valid UTF-8: the data they span is, and each starts and ends on a
/// character boundary. The bytes of nulls are checked too (stricter than needed: the caller then
/// takes its slower path).
#[pyfunction]
pub fn utf8_valid(py: Python<'_>, offsets: Bytes, data: Option<Bytes>, offset: usize, length: usize) -> PyResult<bool> {
    let (offsets, data) = (offsets.as_bytes(), data.as_ref().map_or(&[][..], |d| d.as_bytes()));
    if offsets.len() < (offset + length + 1) * 4 {
        return Err(PyValueError::new_err("a string column's offsets are shorter than its length"));
    }
    let at = |i: usize| i32::from_le_bytes(offsets[i * 4..i * 4 + 4].try_into().unwrap());
    Ok(py.detach(|| {
        let (first, last) = (at(offset), at(offset + length));
        if first < 0 || last < first || last as usize > data.len() {
            return false;
        }
        let span = &data[first as usize..last as usize];
        if std::str::from_utf8(span).is_err() {
            return false;
        }
        // continuation bytes are 0b10xxxxxx: a string starting on one would split a character
        (offset..=offset + length).all(|i| {
            let o = at(i);
            o >= first && o <= last && (o == last || (data[o as usize] as i8) >= -0x40)
        }) && (offset..offset + length).all(|i| at(i) <= at(i + 1))
    }))
}
