//! Metrics and traces for operators.
//!
//! The runtime reports through the [`metrics`] facade (counters per read
//! model and partition: events in, deltas out, duplicates absorbed, dead
//! letters, store writes, changes published, batch errors, batch latency)
//! and [`tracing`] spans around batches. [`install_prometheus`] installs a
//! recorder whose [`render`](metrics_exporter_prometheus::PrometheusHandle::render)
//! gives the Prometheus text exposition; serve it however you serve HTTP.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{Error, Result};

/// Installs a Prometheus recorder as the process's metrics recorder.
///
/// # Errors
///
/// [`Error::Usage`] if a recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Error::Usage(format!("a metrics recorder is already installed: {e}")))?;
    Ok(handle)
}
