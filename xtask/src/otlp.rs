//! An OTLP trace receiver for the distributed scenario: the collector an operator would run,
//! reduced to what the scenario checks. It listens for both protocols the services speak
//! (`grpc` through tonic, `http/protobuf` at `POST /v1/traces`) and keeps every span with the
//! `service.name` it came from.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use prost::Message as _;

/// One received span, reduced to what the checks read.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The trace ids of its links.
    pub links: Vec<String>,
    /// Its own attributes, values as text.
    pub attributes: Vec<(String, String)>,
    /// Every text the span exports: its name, its and its resource's attribute keys and
    /// values, its events' names and attributes, its links' attributes.
    pub texts: Vec<String>,
}

impl Span {
    /// An attribute's value, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Spans received so far.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.resource_spans {
            let resource = pairs(&resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
            let service = resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone());
            let resource_texts: Vec<String> = resource.into_iter().flat_map(|(k, v)| [k, v]).collect();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let mut texts = vec![span.name.clone()];
                texts_of(&span.attributes, &mut texts);
                for event in &span.events {
                    texts.push(event.name.clone());
                    texts_of(&event.attributes, &mut texts);
                }
                for link in &span.links {
                    texts_of(&link.attributes, &mut texts);
                }
                texts.extend(resource_texts.iter().cloned());
                spans.push(Span {
                    service: service.clone().unwrap_or_default(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span.links.iter().map(|l| hex(&l.trace_id)).collect(),
                    attributes: pairs(&span.attributes),
                    texts,
                });
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Each attribute's key and its value as text.
fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes.iter().map(|a| (a.key.clone(), a.value.as_ref().map(text_of).unwrap_or_default())).collect()
}

/// Appends each attribute's key and its value as text.
fn texts_of(attributes: &[KeyValue], out: &mut Vec<String>) {
    out.extend(pairs(attributes).into_iter().flat_map(|(k, v)| [k, v]));
}

fn text_of(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(text_of).collect::<Vec<_>>().join(","),
        Some(Value::KvlistValue(kv)) => {
            let mut out = Vec::new();
            texts_of(&kv.values, &mut out);
            out.join(",")
        }
        // A reference into a dictionary the services do not send.
        Some(Value::StringValueStrindex(index)) => format!("strindex:{index}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// The receiver's two listeners and what they received.
pub struct Receiver {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub received: Received,
}

impl Receiver {
    pub async fn start() -> Result<Self, String> {
        let received = Received::default();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let grpc = grpc_listener.local_addr().map_err(|e| e.to_string())?;
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        let by_http = received.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        by_http.keep(request);
                        let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], answer)
                    }
                    Err(_) => (axum::http::StatusCode::BAD_REQUEST, [("content-type", "text/plain")], Vec::new()),
                }
            }),
        );
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let http = http_listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = axum::serve(http_listener, router).await;
        });
        Ok(Self { grpc, http, received })
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::trace_service_client::TraceServiceClient,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan, span::Link},
    };

    use super::*;

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.to_owned())) }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let span = ProtoSpan {
            name: "request".to_owned(),
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            attributes: vec![attribute("portcullis.component", "gateway")],
            links: vec![Link { trace_id: vec![0xcd; 16], span_id: vec![2; 8], ..Default::default() }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![attribute("service.name", "edge")], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn both_protocols_are_received_and_read_back() {
        let receiver = Receiver::start().await.unwrap();
        let mut client = TraceServiceClient::connect(format!("http://{}", receiver.grpc)).await.unwrap();
        client.export(request()).await.unwrap();
        let posted = reqwest::Client::new()
            .post(format!("http://{}/v1/traces", receiver.http))
            .header("content-type", "application/x-protobuf")
            .body(request().encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 200);
        let spans = receiver.received.spans();
        assert_eq!(spans.len(), 2);
        for span in spans {
            assert_eq!((span.service.as_str(), span.name.as_str()), ("edge", "request"));
            assert_eq!(span.trace_id, "ab".repeat(16));
            assert_eq!(span.links, vec!["cd".repeat(16)]);
            assert_eq!(span.attribute("portcullis.component"), Some("gateway"));
        }
        let garbage = reqwest::Client::new().post(format!("http://{}/v1/traces", receiver.http)).body("x").send();
        assert_eq!(garbage.await.unwrap().status(), 400);
    }
}
