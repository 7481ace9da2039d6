//! MQTT ingest: one task owns the rumqttc event loop and decodes what appliances publish;
//! a writer task batches heartbeats and status changes into PostgreSQL.
//!
//! ```text
//! broker ──$share/<group>/hearth/v1/+/up/#──▶ consumer ──bounded channel──▶ writer ──UNNEST──▶ PostgreSQL
//!                                              (decode, count, drop bad)     (coalesce per appliance)
//! ```
//!
//! The consumer applies backpressure: when the writer falls behind, the channel fills and
//! the consumer stops reading from the broker, which buffers (QoS 1) rather than us
//! dropping. On shutdown the consumer disconnects first; the writer then drains the channel
//! and writes what is left before returning.

mod batch;
mod consumer;

pub use batch::{run_writer, Coalescer, Inbound, Ingested, WriterContext};
pub use consumer::{mqtt_options, run_consumer, ConsumerConfig, ConsumerLinks, MqttSetupError};
