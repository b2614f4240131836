//! A broker consumer of Portcullis webhook events, for a source with
//! `publish = { exchange, routing_key }`: it declares the (durable, topic) exchange and a
//! durable queue of its own bound to it, takes each event, verifies the gateway's Standard
//! Webhooks signature with one of the source's `delivery_secrets`, and acknowledges it only
//! once it has been handled — so a consumer that crashes gets it again (dedupe on the id).
//!
//! ```sh
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f WEBHOOK_EXCHANGE=chat \
//! WEBHOOK_BINDING='whatsapp.#' WEBHOOK_QUEUE=chat-archive WEBHOOK_SECRET=whsec_… \
//! cargo run -p gateway --example webhook_consumer
//! ```
//!
//! The gateway's tests run this same code against the gateway (`webhooks::end_to_end`).

#![allow(dead_code, clippy::print_stdout)]

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use futures::StreamExt as _;
use hmac::{Hmac, Mac as _};
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sha2::Sha256;

/// One received event: the CloudEvent (or raw body) and its headers.
#[derive(Debug)]
pub struct Received {
    pub id: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A consumer on its own queue, bound to the source's exchange.
pub struct Consumer {
    _connection: Connection,
    channel: Channel,
    deliveries: lapin::Consumer,
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// The key of a `whsec_` secret (base64 after the prefix), or the secret's bytes.
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => BASE64.decode(encoded).map_err(|e| format!("WEBHOOK_SECRET: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

impl Consumer {
    /// Connects, declares the exchange and `queue`, binds it with `binding`, and consumes one
    /// event at a time.
    pub async fn open(url: &str, exchange: &str, binding: &str, queue: &str) -> Result<Self, String> {
        let runtime = async_rs::Runtime::tokio_with_handle(tokio::runtime::Handle::current());
        let connection = Connection::connect_with_runtime(url, ConnectionProperties::default(), runtime)
            .await
            .map_err(|e| e.to_string())?;
        let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.into(), durable, arguments).await.map_err(|e| e.to_string())?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        channel.basic_qos(1, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
        let deliveries = channel
            .basic_consume(
                queue.into(),
                "webhook-consumer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { _connection: connection, channel, deliveries })
    }

    /// The next event, its signature verified against `keys` (any one may match, as while
    /// the source rotates its secrets), acknowledged after `handle` accepts it.
    pub async fn next(&mut self, keys: &[Vec<u8>], handle: impl FnOnce(&Received) -> bool) -> Result<Received, String> {
        let delivery = self.deliveries.next().await.ok_or("the consumer was cancelled")?.map_err(|e| e.to_string())?;
        let properties = &delivery.properties;
        let headers = properties.headers().clone().unwrap_or_default();
        let id = text(&headers, "webhook-id").ok_or("no webhook-id")?;
        let timestamp = text(&headers, "webhook-timestamp").ok_or("not signed: no webhook-timestamp")?;
        let signatures = text(&headers, "webhook-signature").ok_or("not signed: no webhook-signature")?;
        let verified = keys.iter().any(|key| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
            for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", &delivery.data] {
                mac.update(part);
            }
            let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
            signatures.split(' ').any(|s| s == expected)
        });
        if !verified {
            return Err(format!("{id}: the signature does not verify"));
        }
        let content_type = properties.content_type().as_ref().map(ToString::to_string).unwrap_or_default();
        let received = Received { id, content_type, body: delivery.data.clone() };
        if handle(&received) {
            delivery.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())?;
        }
        Ok(received)
    }

    /// Deletes the consumer's queue (tests clean up after themselves).
    pub async fn delete(self, queue: &str) -> Result<(), String> {
        self.channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let key = key_of(&var("WEBHOOK_SECRET")?)?;
    let mut consumer =
        Consumer::open(&var("AMQP_URL")?, &var("WEBHOOK_EXCHANGE")?, &var("WEBHOOK_BINDING")?, &var("WEBHOOK_QUEUE")?)
            .await?;
    loop {
        let event = consumer
            .next(std::slice::from_ref(&key), |event| {
                println!("{} {} {}", event.id, event.content_type, String::from_utf8_lossy(&event.body));
                true
            })
            .await?;
        drop(event);
    }
}
