//! Declaring a metric: the one place the `qminder_bridge_` prefix is added, and where a
//! metric is registered as it is made, so that none can be declared and not exported.
//! Every name declared is kept, for the test that each is exported.

use std::cell::RefCell;

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// What every metric name begins with.
pub const PREFIX: &str = "qminder_bridge_";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Makes and registers metrics on one registry. Definitions are fixed in the code, so a
/// bad one is a bug: the constructors panic on it (a unit test makes every one).
#[derive(Debug, Default)]
pub(super) struct Declare {
    registry: Registry,
    names: RefCell<Vec<String>>,
}

impl Declare {
    fn register<C: Collector + Clone + 'static>(&self, name: String, metric: C) -> C {
        self.registry
            .register(Box::new(metric.clone()))
            .expect("each metric is declared once");
        self.names.borrow_mut().push(name);
        metric
    }

    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(format!("{PREFIX}{name}"), help)
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let metric = IntCounter::with_opts(Self::opts(name, help)).expect("a valid counter");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let metric = IntCounterVec::new(Self::opts(name, help), labels).expect("a valid counter");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let metric = IntGauge::with_opts(Self::opts(name, help)).expect("a valid gauge");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        let metric = Gauge::with_opts(Self::opts(name, help)).expect("a valid gauge");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let metric = IntGaugeVec::new(Self::opts(name, help), labels).expect("a valid gauge");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let metric = GaugeVec::new(Self::opts(name, help), labels).expect("a valid gauge");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    fn latency(name: &str, help: &str) -> HistogramOpts {
        HistogramOpts::new(format!("{PREFIX}{name}"), help).buckets(LATENCY_BUCKETS.to_vec())
    }

    pub fn latency_histogram(&self, name: &str, help: &str) -> Histogram {
        let metric = Histogram::with_opts(Self::latency(name, help)).expect("a valid histogram");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    pub fn latency_histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let metric =
            HistogramVec::new(Self::latency(name, help), labels).expect("a valid histogram");
        self.register(format!("{PREFIX}{name}"), metric)
    }

    /// The registry, and every name declared on it.
    pub fn finish(self) -> (Registry, Vec<String>) {
        (self.registry, self.names.into_inner())
    }
}
