//! The replay producer: a batch of records, given as columns, produced in one call without the GIL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext, PurgeConfig};

use rdkafka_sys as rdsys;

use crate::columns::{BlobColumn, Bytes};
use crate::{kafka_error, timeout, Queues};

/// How long to wait for room when librdkafka's queue is full, before trying again. (The crate's
/// `poll` always waits its whole timeout: keep it short.)
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

struct Context {
    queues: Queues,
    failures: Mutex<Vec<String>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.queues.log(level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        self.queues.error(&error, reason);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    /// Only failures are reported (`delivery.report.only.error`): each is remembered, named by
    /// topic and partition (a record that never got a partition names the topic only).
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let place = if message.partition() < 0 {
                message.topic().to_string()
            } else {
                format!("{}[{}]", message.topic(), message.partition())
            };
            self.failures.lock().unwrap().push(format!("{place}: {error}"));
        }
    }
}

/// Kafka's murmur2 (the Java producer's default partitioner for keyed records).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Per key, `toPositive(murmur2(key)) % partitions` as packed int32; -1 for a null key.
#[pyfunction]
pub fn partitions_for_keys<'py>(py: Python<'py>, keys: BlobColumn<'py>, partitions: i32) -> PyResult<Bound<'py, PyBytes>> {
    if partitions < 1 {
        return Err(PyValueError::new_err("partitions must be at least 1"));
    }
    let keys = keys.slices()?;
    let mut out = Vec::with_capacity(keys.len() * 4);
    for key in keys {
        let partition = match key {
            None => -1,
            Some(key) => ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32,
        };
        out.extend_from_slice(&partition.to_le_bytes());
    }
    Ok(PyBytes::new(py, &out))
}

fn int32s(bytes: &[u8]) -> Vec<i32> {
    bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn int64s(bytes: &[u8]) -> Vec<i64> {
    bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The headers of a batch as Arrow lays out a list<struct<key: string, value: binary>>: per record
/// its range of entries, per entry the ranges of its name and value and whether the value is set.
struct HeaderColumns<'a> {
    lists: Vec<i32>,
    name_offsets: Vec<i32>,
    names: &'a [u8],
    value_offsets: Vec<i32>,
    values: &'a [u8],
    valid: Option<&'a [u8]>,
}

impl HeaderColumns<'_> {
    fn of(&self, record: usize) -> PyResult<Vec<(&str, Option<&[u8]>)>> {
        let (begin, end) = (self.lists[record] as usize, self.lists[record + 1] as usize);
        (begin..end)
            .map(|j| {
                let name = &self.names[self.name_offsets[j] as usize..self.name_offsets[j + 1] as usize];
                let name = std::str::from_utf8(name).map_err(|e| PyValueError::new_err(format!("header name: {e}")))?;
                let set = self.valid.map_or(true, |v| v[j] != 0);
                let value = set.then(|| &self.values[self.value_offsets[j] as usize..self.value_offsets[j + 1] as usize]);
                Ok((name, value))
            })
            .collect()
    }
}

/// A producer taking batches of columns (and single records, for checkpoints).
#[pyclass(frozen, module = "archiver_native")]
pub struct Producer {
    inner: BaseProducer<Context>,
}

impl Producer {
    /// Serve every event waiting (delivery failures, errors): the crate's `poll(0)` serves one.
    fn serve(&self) {
        let rk = self.inner.client().native_ptr();
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(rk) };
        for _ in 0..100_000 {
            if unsafe { rdsys::rd_kafka_queue_length(queue) } == 0 {
                break;
            }
            self.inner.poll(Duration::ZERO);
        }
        unsafe { rdsys::rd_kafka_queue_destroy(queue) };
    }

    fn send(&self, record: BaseRecord<'_, [u8], [u8]>) -> Result<(), RdError> {
        let mut record = record;
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    self.inner.poll(QUEUE_FULL_WAIT); // serve deliveries until there is room
                    record = returned;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

fn headers_of(entries: &[(&str, Option<&[u8]>)], extra: &[(&str, Vec<u8>)]) -> Option<OwnedHeaders> {
    if entries.is_empty() && extra.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(entries.len() + extra.len());
    for (key, value) in entries {
        headers = headers.insert(Header { key, value: *value });
    }
    for (key, value) in extra {
        headers = headers.insert(Header { key, value: Some(value.as_slice()) });
    }
    Some(headers)
}

#[pymethods]
impl Producer {
    /// `config`: librdkafka properties (strings), as confluent-kafka takes them.
    #[new]
    fn new(config: HashMap<String, String>) -> PyResult<Self> {
        let mut client = ClientConfig::new();
        for (key, value) in &config {
            client.set(key, value);
        }
        client.set("delivery.report.only.error", "true");
        let context = Context { queues: Queues::default(), failures: Mutex::new(Vec::new()) };
        let inner = client.create_with_context::<Context, BaseProducer<Context>>(context).map_err(kafka_error)?;
        Ok(Producer { inner })
    }

    /// Produce one record; `partition` -1 lets the partitioner choose, `timestamp` 0 is "now".
    #[pyo3(signature = (topic, value, key=None, partition=-1, headers=Vec::new(), timestamp=0))]
    fn produce(&self, py: Python<'_>, topic: String, value: Option<Vec<u8>>, key: Option<Vec<u8>>, partition: i32,
               headers: Vec<(String, Option<Vec<u8>>)>, timestamp: i64) -> PyResult<()> {
        py.detach(|| {
            let entries: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic);
            if partition >= 0 {
                record = record.partition(partition);
            }
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            if let Some(value) = value.as_deref() {
                record = record.payload(value);
            }
            if timestamp != 0 {
                record = record.timestamp(timestamp);
            }
            if let Some(h) = headers_of(&entries, &[]) {
                record = record.headers(h);
            }
            self.send(record)
        })
        .map_err(kafka_error)
    }

    /// Produce a batch given as columns, in order; returns the bytes of keys and values sent.
    ///
    /// `partitions` and `timestamps` are packed int32 and int64 (a timestamp of 0: "now"), `keys`
    /// and `values` lists of bytes or None, `headers` the Arrow buffers of HeaderColumns (list
    /// offsets, name offsets, names, value offsets, values, one byte per entry set or None).
    /// `lineage` (source topic, source partition, packed int64 offsets) adds the
    /// archiver.source.* headers; `schema_ids` rewrites a Confluent value's schema id.
    #[pyo3(signature = (topic, partitions, timestamps, keys, values, headers, lineage=None, schema_ids=None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn produce_batch(&self, py: Python<'_>, topic: String, partitions: Bytes, timestamps: Bytes,
                     keys: BlobColumn<'_>, values: BlobColumn<'_>,
                     headers: (Bytes, Bytes, Bytes, Bytes, Bytes, Option<Bytes>),
                     lineage: Option<(String, i32, Bytes)>, schema_ids: Option<HashMap<u32, u32>>) -> PyResult<u64> {
        let n = values.len();
        let (partitions, timestamps) = (int32s(partitions.as_bytes()), int64s(timestamps.as_bytes()));
        let headers = HeaderColumns {
            lists: int32s(headers.0.as_bytes()),
            name_offsets: int32s(headers.1.as_bytes()),
            names: headers.2.as_bytes(),
            value_offsets: int32s(headers.3.as_bytes()),
            values: headers.4.as_bytes(),
            valid: headers.5.as_ref().map(|v| v.as_bytes()),
        };
        let lineage = lineage.map(|(topic, partition, offsets)| (topic, partition.to_string(), int64s(offsets.as_bytes())));
        if keys.len() != n || partitions.len() != n || timestamps.len() != n || headers.lists.len() != n + 1
            || lineage.as_ref().is_some_and(|(_, _, offsets)| offsets.len() != n) {
            return Err(PyValueError::new_err("produce_batch: columns of different lengths"));
        }
        let (keys, values) = (keys.slices()?, values.slices()?);
        let entries: Vec<Vec<(&str, Option<&[u8]>)>> = (0..n).map(|i| headers.of(i)).collect::<PyResult<_>>()?;
        py.detach(|| {
            let mut sent = 0u64;
            let mut rewritten = Vec::new();
            for i in 0..n {
                let mut value = values[i];
                if let (Some(map), Some(v)) = (&schema_ids, value) {
                    if v.len() >= 5 && v[0] == 0 {
                        if let Some(id) = map.get(&u32::from_be_bytes([v[1], v[2], v[3], v[4]])) {
                            rewritten.clear();
                            rewritten.push(0);
                            rewritten.extend_from_slice(&id.to_be_bytes());
                            rewritten.extend_from_slice(&v[5..]);
                            value = Some(rewritten.as_slice());
                        }
                    }
                }
                let extra: Vec<(&str, Vec<u8>)> = match &lineage {
                    None => Vec::new(),
                    Some((source, partition, offsets)) => vec![
                        ("archiver.source.topic", source.as_bytes().to_vec()),
                        ("archiver.source.partition", partition.as_bytes().to_vec()),
                        ("archiver.source.offset", offsets[i].to_string().into_bytes()),
                    ],
                };
                let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic).partition(partitions[i]);
                if let Some(key) = keys[i] {
                    record = record.key(key);
                    sent += key.len() as u64;
                }
                if let Some(value) = value {
                    record = record.payload(value);
                    sent += value.len() as u64;
                }
                if timestamps[i] != 0 {
                    record = record.timestamp(timestamps[i]);
                }
                if let Some(h) = headers_of(&entries[i], &extra) {
                    record = record.headers(h);
                }
                self.send(record)?;
                if i % 1000 == 999 {
                    self.serve(); // delivery reports now and then
                }
            }
            self.serve();
            Ok::<u64, RdError>(sent)
        })
        .map_err(kafka_error)
    }

    fn poll(&self, py: Python<'_>, timeout_s: f64) {
        py.detach(|| {
            self.inner.poll(timeout(timeout_s));
            self.serve();
        });
    }

    /// Wait up to `timeout_s` for every queued record; returns how many are still queued.
    /// (librdkafka's own flush: with the event API it waits for the count to reach zero, where
    /// the crate's polls in steps of 100 ms.)
    fn flush(&self, py: Python<'_>, timeout_s: f64) -> i32 {
        py.detach(|| {
            let ms = (timeout_s.max(0.0) * 1000.0).min(i32::MAX as f64) as i32;
            unsafe { rdsys::rd_kafka_flush(self.inner.client().native_ptr(), ms) };
            self.serve();
            self.inner.in_flight_count()
        })
    }

    /// Delivery failures since the last call, as "topic[partition]: error".
    fn failures(&self) -> Vec<String> {
        self.inner.context().failures.lock().unwrap().drain(..).collect()
    }

    fn logs(&self) -> Vec<(i32, String, String)> {
        self.inner.context().queues.take_logs()
    }

    fn errors(&self) -> Vec<crate::ErrorEvent> {
        self.inner.context().queues.errors.lock().unwrap().drain(..).collect()
    }

    /// Drop every queued and in-flight record.
    fn purge(&self) {
        self.inner.purge(PurgeConfig::default().queue().inflight());
    }

    fn init_transactions(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        py.detach(|| self.inner.init_transactions(timeout(timeout_s))).map_err(kafka_error)
    }

    fn begin_transaction(&self) -> PyResult<()> {
        self.inner.begin_transaction().map_err(kafka_error)
    }

    fn commit_transaction(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        py.detach(|| self.inner.commit_transaction(timeout(timeout_s))).map_err(kafka_error)
    }

    fn abort_transaction(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        py.detach(|| self.inner.abort_transaction(timeout(timeout_s))).map_err(kafka_error)
    }
}
