//! archiver's native data path: Kafka records in and out as columns, without a Python object
//! per record where it can be helped (the key and the value are Python bytes on both sides).
//!
//! - `Consumer` (consumer.rs): a group consumer whose `consume` returns each partition's run of
//!   records as column buffers, polled without the GIL.
//! - `Producer` (producer.rs): produces a batch of columns in one call, for replay.
//!
//! Both are librdkafka through the `rdkafka` crate: the same C client confluent-kafka wraps, so
//! configuration keys, error codes and the group protocol are the same. Errors raise
//! `KafkaError(code, name, reason, fatal)` with librdkafka's own error codes.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};

mod columns;
mod consumer;
mod producer;

pyo3::create_exception!(archiver_native, KafkaError, PyException, "A librdkafka error: args are (code, name, reason, fatal).");

/// Log lines and error events waiting for the Python side (librdkafka logs from its own threads,
/// which must not take the GIL: they are handed over on the next call instead).
const MAX_QUEUED: usize = 1_000;

pub(crate) type ErrorEvent = (i32, String, String, bool);

#[derive(Default)]
pub(crate) struct Queues {
    pub(crate) errors: Mutex<Vec<ErrorEvent>>,
    logs: Mutex<Vec<(i32, String, String)>>,
}

impl Queues {
    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg => 0,
            RDKafkaLogLevel::Alert => 1,
            RDKafkaLogLevel::Critical => 2,
            RDKafkaLogLevel::Error => 3,
            RDKafkaLogLevel::Warning => 4,
            RDKafkaLogLevel::Notice => 5,
            RDKafkaLogLevel::Info => 6,
            RDKafkaLogLevel::Debug => 7,
        };
        let mut logs = self.logs.lock().unwrap();
        if logs.len() < MAX_QUEUED {
            logs.push((level, fac.to_string(), message.to_string()));
        }
    }

    pub(crate) fn error(&self, error: &RdError, reason: &str) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < MAX_QUEUED {
            errors.push(error_event(error, reason));
        }
    }

    pub(crate) fn take_logs(&self) -> Vec<(i32, String, String)> {
        self.logs.lock().unwrap().drain(..).collect()
    }
}

pub(crate) fn error_event(error: &RdError, reason: &str) -> ErrorEvent {
    let code = error.rdkafka_error_code();
    let fatal = matches!(code, Some(RDKafkaErrorCode::Fatal)) || matches!(error, RdError::Transaction(e) if e.is_fatal());
    let number = code.map(|c| c as i32).unwrap_or(-1);
    let name = code.map(|c| format!("{c:?}")).unwrap_or_else(|| "Unknown".to_string());
    (number, name, if reason.is_empty() { error.to_string() } else { reason.to_string() }, fatal)
}

pub(crate) fn kafka_error(error: RdError) -> PyErr {
    KafkaError::new_err(error_event(&error, ""))
}

pub(crate) fn timeout(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

#[pymodule]
fn archiver_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<producer::Producer>()?;
    m.add_function(wrap_pyfunction!(producer::partitions_for_keys, m)?)?;
    m.add_function(wrap_pyfunction!(columns::frame_datums, m)?)?;
    m.add_function(wrap_pyfunction!(columns::utf8_valid, m)?)?;
    m.add("KafkaError", m.py().get_type::<KafkaError>())?;
    m.add("LIBRDKAFKA_VERSION", rdkafka::util::get_rdkafka_version().1)?;
    Ok(())
}
