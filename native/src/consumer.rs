//! The group consumer: records handed over as column buffers, polled without the GIL.

use std::collections::HashMap;
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka_sys as rdsys;

use crate::{error_event, kafka_error, timeout, ErrorEvent, KafkaError, Queues};

struct Context {
    on_rebalance: Mutex<Option<Py<PyAny>>>,
    failure: Mutex<Option<PyErr>>,
    queues: Queues,
    assigned: AtomicBool,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.queues.log(level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        self.queues.error(&error, reason);
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let kind = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => "assign",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if consumer.assignment_lost() => "lost",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => "revoke",
            other => {
                let code: RDKafkaErrorCode = other.into();
                self.queues.error(&RdError::Rebalance(code), "");
                "error"
            }
        };
        self.assigned.store(false, Ordering::SeqCst);
        let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        Python::attach(|py| {
            let callback = self.on_rebalance.lock().unwrap().as_ref().map(|c| c.clone_ref(py));
            if let Some(callback) = callback {
                if let Err(e) = callback.call1(py, (kind, parts)) {
                    let mut failure = self.failure.lock().unwrap();
                    if failure.is_none() {
                        *failure = Some(e);
                    }
                }
            }
        });
        if self.assigned.load(Ordering::SeqCst) || kind == "error" {
            return;
        }
        // The callback did not (or failed to): keep librdkafka's state consistent, as confluent-kafka does.
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match (kind, cooperative) {
            ("assign", true) => consumer.incremental_assign(tpl),
            ("assign", false) => consumer.assign(tpl),
            (_, true) => consumer.incremental_unassign(tpl),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = result {
            self.queues.error(&e, "");
        }
    }
}

/// Byte strings (or nulls) laid end to end: one allocation for a run's keys, one for its values.
#[derive(Default)]
struct Blobs {
    data: Vec<u8>,
    ends: Vec<usize>,
    null: Vec<bool>,
}

impl Blobs {
    fn push(&mut self, item: Option<&[u8]>) {
        if let Some(bytes) = item {
            self.data.extend_from_slice(bytes);
        }
        self.ends.push(self.data.len());
        self.null.push(item.is_none());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (!self.null[i]).then(|| &self.data[start..self.ends[i]])
    }
}

/// One partition's records of a `consume` call, in offset order.
#[derive(Default)]
struct Run {
    topic: String,
    partition: i32,
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    types: Vec<i8>,
    keys: Blobs,
    values: Blobs,
    header_offsets: Vec<i32>,
    name_offsets: Vec<i32>,
    names: Vec<u8>,
    value_offsets: Vec<i32>,
    header_values: Vec<u8>,
    value_validity: Vec<u8>,
    header_count: usize,
    null_header_values: usize,
}

impl Run {
    fn new(topic: &str, partition: i32) -> Run {
        Run {
            topic: topic.to_string(),
            partition,
            header_offsets: vec![0],
            name_offsets: vec![0],
            value_offsets: vec![0],
            ..Default::default()
        }
    }

    fn push<M: Message>(&mut self, message: &M, raw: *mut rdsys::rd_kafka_message_t) {
        self.offsets.push(message.offset());
        let (kind, ts) = match message.timestamp() {
            Timestamp::NotAvailable => (0, -1),
            Timestamp::CreateTime(ms) => (1, ms),
            Timestamp::LogAppendTime(ms) => (2, ms),
        };
        self.types.push(kind);
        self.timestamps.push(ts);
        self.keys.push(message.key());
        self.values.push(message.payload());
        self.push_headers(raw);
    }

    /// Headers through the C API: a header name that is not UTF-8 is kept (lossily), not a panic.
    fn push_headers(&mut self, raw: *mut rdsys::rd_kafka_message_t) {
        let mut headers: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
        let found = unsafe { rdsys::rd_kafka_message_headers(raw, &mut headers) };
        if found == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null() {
            let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
            for i in 0..count {
                let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0usize);
                let err = unsafe { rdsys::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size) };
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    break;
                }
                let name = unsafe { CStr::from_ptr(name) }.to_bytes();
                match std::str::from_utf8(name) {
                    Ok(text) => self.names.extend_from_slice(text.as_bytes()),
                    Err(_) => self.names.extend_from_slice(String::from_utf8_lossy(name).as_bytes()),
                }
                self.name_offsets.push(self.names.len() as i32);
                let index = self.header_count;
                if index % 8 == 0 {
                    self.value_validity.push(0);
                }
                if value.is_null() {
                    self.null_header_values += 1;
                } else {
                    let bytes = unsafe { std::slice::from_raw_parts(value as *const u8, size) };
                    self.header_values.extend_from_slice(bytes);
                    self.value_validity[index / 8] |= 1 << (index % 8);
                }
                self.value_offsets.push(self.header_values.len() as i32);
                self.header_count += 1;
            }
        }
        self.header_offsets.push(self.header_count as i32);
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        fn packed<'py, T: Copy>(py: Python<'py>, values: &[T]) -> Bound<'py, PyBytes> {
            let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) };
            PyBytes::new(py, bytes)
        }
        fn blobs<'py>(py: Python<'py>, items: &Blobs) -> PyResult<Bound<'py, PyList>> {
            PyList::new(py, (0..items.len()).map(|i| items.get(i).map(|b| PyBytes::new(py, b))))
        }
        let validity = if self.null_header_values == 0 { None } else { Some(PyBytes::new(py, &self.value_validity)) };
        (
            self.topic.as_str(),
            self.partition,
            packed(py, &self.offsets),
            packed(py, &self.timestamps),
            packed(py, &self.types),
            blobs(py, &self.keys)?,
            blobs(py, &self.values)?,
            (
                packed(py, &self.header_offsets),
                packed(py, &self.name_offsets),
                PyBytes::new(py, &self.names),
                packed(py, &self.value_offsets),
                PyBytes::new(py, &self.header_values),
                validity,
                self.header_count,
            ),
        )
            .into_pyobject(py)
    }
}

fn partitions(parts: &[(String, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(parts.len());
    for (topic, partition) in parts {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

fn positions(parts: &[(String, i32, i64)]) -> PyResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(parts.len());
    for (topic, partition, offset) in parts {
        tpl.add_partition_offset(topic, *partition, Offset::from_raw(*offset)).map_err(kafka_error)?;
    }
    Ok(tpl)
}

fn listed(tpl: &TopicPartitionList) -> Vec<(String, i32, i64)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition(), e.offset().to_raw().unwrap_or(-1001))).collect()
}

/// A Kafka group consumer that hands records over as column buffers.
#[pyclass(frozen, module = "archiver_native")]
pub struct Consumer {
    inner: BaseConsumer<Context>,
}

impl Consumer {
    fn raise_failure(&self) -> PyResult<()> {
        match self.inner.context().failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl Consumer {
    /// `config`: librdkafka properties (strings), as confluent-kafka takes them.
    #[new]
    fn new(config: HashMap<String, String>) -> PyResult<Self> {
        let mut client = ClientConfig::new();
        for (key, value) in &config {
            client.set(key, value);
        }
        let context = Context {
            on_rebalance: Mutex::new(None),
            failure: Mutex::new(None),
            queues: Queues::default(),
            assigned: AtomicBool::new(false),
        };
        let inner = client.create_with_context::<Context, BaseConsumer<Context>>(context).map_err(kafka_error)?;
        Ok(Consumer { inner })
    }

    fn subscribe(&self, topics: Vec<String>, on_rebalance: Py<PyAny>) -> PyResult<()> {
        *self.inner.context().on_rebalance.lock().unwrap() = Some(on_rebalance);
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.inner.subscribe(&names).map_err(kafka_error)
    }

    /// Up to `max_messages` records: waits up to `timeout_s` for the first, then takes what is
    /// already fetched. Returns (runs, errors); a run is (topic, partition, offsets, timestamps,
    /// timestamp types, keys, values, headers), an error (code, name, reason, fatal).
    fn consume<'py>(&self, py: Python<'py>, max_messages: usize, timeout_s: f64)
                    -> PyResult<(Vec<Bound<'py, PyTuple>>, Vec<ErrorEvent>)> {
        let (runs, mut errors) = py.detach(|| {
            let mut runs: Vec<Run> = Vec::new();
            let mut index: HashMap<(String, i32), usize> = HashMap::new();
            let mut errors = Vec::new();
            let mut last: Option<usize> = None;
            let deadline = Instant::now() + timeout(timeout_s);
            let mut taken = 0;
            while taken < max_messages {
                let wait = if taken == 0 { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
                match self.inner.poll(wait) {
                    None => {
                        if taken > 0 || Instant::now() >= deadline || self.inner.context().failure.lock().unwrap().is_some() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        errors.push(error_event(&e, ""));
                        if taken == 0 && !errors.is_empty() {
                            break;
                        }
                    }
                    Some(Ok(message)) => {
                        // messages come in runs of one partition: look the run up only when it changes
                        let same = last.is_some_and(|slot: usize| {
                            runs[slot].partition == message.partition() && runs[slot].topic == message.topic()
                        });
                        let slot = if same {
                            last.unwrap()
                        } else {
                            let key = (message.topic().to_string(), message.partition());
                            *index.entry(key).or_insert_with(|| {
                                runs.push(Run::new(message.topic(), message.partition()));
                                runs.len() - 1
                            })
                        };
                        last = Some(slot);
                        runs[slot].push(&message, message.ptr());
                        taken += 1;
                    }
                }
                if self.inner.context().failure.lock().unwrap().is_some() {
                    break;
                }
            }
            (runs, errors)
        });
        errors.extend(self.inner.context().queues.errors.lock().unwrap().drain(..));
        self.raise_failure()?;
        let runs = runs.into_iter().map(|run| run.into_py(py)).collect::<PyResult<Vec<_>>>()?;
        Ok((runs, errors))
    }

    /// librdkafka's log lines since the last call: (syslog level, facility, message).
    fn logs(&self) -> Vec<(i32, String, String)> {
        self.inner.context().queues.take_logs()
    }

    fn incremental_assign(&self, parts: Vec<(String, i32, i64)>) -> PyResult<()> {
        self.inner.context().assigned.store(true, Ordering::SeqCst);
        self.inner.incremental_assign(&positions(&parts)?).map_err(kafka_error)
    }

    fn incremental_unassign(&self, parts: Vec<(String, i32)>) -> PyResult<()> {
        self.inner.context().assigned.store(true, Ordering::SeqCst);
        self.inner.incremental_unassign(&partitions(&parts)).map_err(kafka_error)
    }

    fn assignment(&self) -> PyResult<Vec<(String, i32)>> {
        let tpl = self.inner.assignment().map_err(kafka_error)?;
        Ok(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
    }

    fn committed(&self, py: Python<'_>, parts: Vec<(String, i32)>, timeout_s: f64) -> PyResult<Vec<(String, i32, i64)>> {
        let tpl = partitions(&parts);
        let result = py.detach(|| self.inner.committed_offsets(tpl, timeout(timeout_s)));
        Ok(listed(&result.map_err(kafka_error)?))
    }

    fn commit(&self, parts: Vec<(String, i32, i64)>, asynchronous: bool) -> PyResult<()> {
        let mode = if asynchronous { CommitMode::Async } else { CommitMode::Sync };
        self.inner.commit(&positions(&parts)?, mode).map_err(kafka_error)
    }

    /// (low, high) watermarks: asked of the broker, or as last fetched when `cached`.
    fn watermarks(&self, py: Python<'_>, topic: String, partition: i32, timeout_s: f64, cached: bool) -> PyResult<(i64, i64)> {
        if cached {
            let (mut low, mut high) = (-1i64, -1i64);
            let name = std::ffi::CString::new(topic).map_err(|e| KafkaError::new_err((-1, "Invalid", e.to_string(), false)))?;
            let err = unsafe {
                rdsys::rd_kafka_get_watermark_offsets(self.inner.client().native_ptr(), name.as_ptr(), partition, &mut low, &mut high)
            };
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(kafka_error(RdError::MetadataFetch(err.into())));
            }
            return Ok((low, high));
        }
        py.detach(|| self.inner.fetch_watermarks(&topic, partition, timeout(timeout_s))).map_err(kafka_error)
    }

    fn position(&self, parts: Vec<(String, i32)>) -> PyResult<Vec<(String, i32, i64)>> {
        let tpl = partitions(&parts);
        let err = unsafe { rdsys::rd_kafka_position(self.inner.client().native_ptr(), tpl.ptr()) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(kafka_error(RdError::MetadataFetch(err.into())));
        }
        Ok(listed(&tpl))
    }

    fn seek(&self, py: Python<'_>, topic: String, partition: i32, offset: i64, timeout_s: f64) -> PyResult<()> {
        py.detach(|| self.inner.seek(&topic, partition, Offset::from_raw(offset), timeout(timeout_s))).map_err(kafka_error)
    }

    fn pause(&self, parts: Vec<(String, i32)>) -> PyResult<()> {
        self.inner.pause(&partitions(&parts)).map_err(kafka_error)
    }

    fn resume(&self, parts: Vec<(String, i32)>) -> PyResult<()> {
        self.inner.resume(&partitions(&parts)).map_err(kafka_error)
    }

    /// Leave the group: the revoke callback runs (on this thread) before it returns.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.closed() {
            return Ok(());
        }
        py.detach(|| {
            self.inner.close_queue()?;
            while !self.inner.closed() {
                self.inner.poll(Duration::from_millis(100));
            }
            Ok::<(), RdError>(())
        })
        .map_err(kafka_error)?;
        self.raise_failure()
    }
}

