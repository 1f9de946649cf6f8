//! `qminder_bridge_kafka_*`: librdkafka's own view of the producer and the brokers, set
//! from its statistics by `delivery/kafka/stats.rs`. Broker labels are node ids (capped
//! there), topic labels come from the configuration.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec};

use super::Declare;

/// The gauges and counters of librdkafka's statistics.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    pub queue_messages: IntGauge,
    pub queue_max_messages: IntGauge,
    pub queue_bytes: IntGauge,
    pub queue_max_bytes: IntGauge,
    pub broker_rtt: GaugeVec,
    pub broker_in_flight: IntGaugeVec,
    pub broker_waiting: IntGaugeVec,
    pub broker_transmit_errors: IntCounterVec,
    pub broker_request_timeouts: IntCounterVec,
    pub broker_retries: IntCounterVec,
    pub broker_connects: IntCounterVec,
    pub broker_disconnects: IntCounterVec,
    pub batch_messages: GaugeVec,
}

impl KafkaMetrics {
    pub(super) fn new(d: &Declare) -> Self {
        let broker = &["broker"];
        Self {
            queue_messages: d.gauge("kafka_queue_messages",
                "Records in the producer's queue, waiting to be sent or for their ack (librdkafka msg_cnt).",
            ),
            queue_max_messages: d.gauge("kafka_queue_max_messages",
                "The producer queue's limit in records (queue.buffering.max.messages); a full queue answers 503.",
            ),
            queue_bytes: d.gauge("kafka_queue_bytes",
                "Bytes of the records in the producer's queue (librdkafka msg_size).",
            ),
            queue_max_bytes: d.gauge("kafka_queue_max_bytes",
                "The producer queue's limit in bytes (queue.buffering.max.kbytes).",
            ),
            broker_rtt: d.float_gauge_vec(
                "kafka_broker_rtt_seconds",
                "Round trip of requests to a broker over the last statistics interval, by broker node id and quantile; absent for a broker asked nothing in that interval.",
                &["broker", "quantile"],
            ),
            broker_in_flight: d.gauge_vec("kafka_broker_requests_in_flight", "Requests sent to a broker and waiting for its response.", broker),
            broker_waiting: d.gauge_vec("kafka_broker_requests_waiting", "Requests waiting to be sent to a broker.", broker),
            broker_transmit_errors: d.counter_vec("kafka_broker_transmit_errors_total",
                "Errors sending requests to a broker.",
                broker,
            ),
            broker_request_timeouts: d.counter_vec("kafka_broker_request_timeouts_total",
                "Requests to a broker that timed out.",
                broker,
            ),
            broker_retries: d.counter_vec("kafka_broker_retries_total",
                "Requests to a broker sent again after a retriable error.",
                broker,
            ),
            broker_connects: d.counter_vec("kafka_broker_connects_total",
                "Connections made to a broker.",
                broker,
            ),
            broker_disconnects: d.counter_vec("kafka_broker_disconnects_total",
                "Connections to a broker that were lost or closed.",
                broker,
            ),
            batch_messages: d.float_gauge_vec(
                "kafka_batch_messages",
                "Average records per produce batch over the last statistics interval that had any, by topic.",
                &["topic"],
            ),
        }
    }
}
