//! MQTT ingest: one task owns the rumqttc event loop and decodes what appliances publish;
//! a writer task batches heartbeats and status changes into PostgreSQL.
//!
//! ```text
//! broker ──$share/<group>/hearth/v1/+/up/#──▶ consumer ──bounded channel──▶ writer ──UNNEST──▶ PostgreSQL
//!                                  (rate limit per appliance, decode,     (coalesce per appliance)
//!                                   count, drop bad and throttled)
//! ```
//!
//! What an appliance sends of its own accord — heartbeats, configuration requests,
//! certificate requests — takes a token from its appliance's bucket
//! (`limits::RateLimits::check_mqtt`: the tenant's plan's `mqtt_per_minute`/`mqtt_burst` or
//! `limits.mqtt_*`, looked up in memory, never in PostgreSQL) before its payload is decoded,
//! and over the limit is dropped and counted (`hearth_rate_limited_total{kind="mqtt"}`).
//! Status messages (`online`, `offline`, the last will) take a token from a bucket of their
//! own (`limits::PRESENCE_RATE`): presence must not wait for the sweeper because a task or
//! heartbeats used up the allowance. Task events, task results and configuration reports
//! take no token and are never dropped: they answer what the control plane sent (see
//! `consumer::allowance`). The excess of a flooding
//! appliance thus never takes room in the channel, the writer or PostgreSQL, and other
//! appliances are not slowed.
//!
//! The consumer applies backpressure: when the writer falls behind, the channel fills and
//! the consumer stops reading from the broker, which buffers (QoS 1) rather than us
//! dropping. On shutdown the consumer disconnects first; the writer then drains the channel
//! and writes what is left before returning.

mod batch;
mod consumer;

pub use batch::{run_writer, Coalescer, Inbound, Ingested, Pending, WriterContext};
pub use consumer::{run_consumer, ConsumerConfig, ConsumerLinks, RenewalRequest};
