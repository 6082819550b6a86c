//! Logging (`tracing`: human on a TTY, JSON with `REPOBOX_LOG_FORMAT=json`) and the
//! Prometheus metrics served at `/metrics`.
//!
//! Secrets never reach a log line because they are held in [`crate::secret::Secret`],
//! whose `Debug`/`Display` print a masked form, and forge error texts are redacted
//! before they are logged.

use std::io::IsTerminal;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::model::ForgeKind;

/// Installs the global subscriber. `json` selects JSON lines.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("REPOBOX_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    forge: &'static str,
    event: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForgeLabels {
    forge: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Process metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    deliveries: Family<DeliveryLabels, Counter>,
    jobs_queued: Family<ForgeLabels, Counter>,
    acknowledgements: Family<OutcomeLabels, Counter>,
    ack_latency: Histogram,
    job_duration: Histogram,
    webhooks_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("repobox");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by forge, event and outcome",
            deliveries.clone(),
        );
        let jobs_queued = Family::<ForgeLabels, Counter>::default();
        registry.register("jobs_queued", "Jobs queued by intake", jobs_queued.clone());
        let acknowledgements = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "acknowledgements",
            "Acknowledgement tasks by outcome",
            acknowledgements.clone(),
        );
        let ack_latency = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "acknowledgement_latency_seconds",
            "Time from intake to the reaction and progress comment being posted",
            ack_latency.clone(),
        );
        let job_duration =
            Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]);
        registry.register(
            "job_run_seconds",
            "Time a runner spent on one delivery of a job",
            job_duration.clone(),
        );
        let webhooks_in_flight = Gauge::default();
        registry.register(
            "webhook_requests_in_flight",
            "Webhook requests being read or handled now (at most 256; more get 503)",
            webhooks_in_flight.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            webhooks_in_flight,
            job_duration,
            deliveries,
            jobs_queued,
            acknowledgements,
            ack_latency,
        }
    }

    pub fn delivery(&self, forge: ForgeKind, event: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                forge: forge.as_str(),
                event: event.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn job_queued(&self, forge: ForgeKind) {
        self.jobs_queued
            .get_or_create(&ForgeLabels {
                forge: forge.as_str(),
            })
            .inc();
    }

    pub fn acknowledgement(&self, outcome: &'static str) {
        self.acknowledgements
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn ack_latency(&self, seconds: f64) {
        self.ack_latency.observe(seconds);
    }

    /// The gauge of webhook requests in flight, kept by the webhook limits' gate.
    pub fn webhooks_in_flight(&self) -> Gauge {
        self.webhooks_in_flight.clone()
    }

    pub fn job_run(&self, seconds: f64) {
        self.job_duration.observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
