//! Traces across services: OpenTelemetry spans exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and off —
//! no span built, no cost on the request path — when it is not; the W3C `traceparent` rule
//! every service applies (SPEC §6): a caller's trace is continued only when the caller is
//! trusted, otherwise a new trace starts with a link to the caller's.
//!
//! Only spans are exported, never log events, and only the spans Portcullis opens itself
//! (targets of its own crates), whose fields are chosen so that no credential, password, email
//! or secret can be among their attributes (`docs/operations.md`, "Tracing").

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{Layer, Registry, filter::filter_fn};

use crate::env::{ConfigError, Env, EnvExt, Fallback, Var};

/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The standard variables read here (the exporter reads the other `OTEL_EXPORTER_OTLP_*`
/// ones itself); part of the table every binary reads.
pub const VARIABLES: &[Var] = &[
    Var::new(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        Fallback::Unset,
        "OTLP collector (`http://host:port`; plain HTTP or h2c, no TLS): set, every service exports its spans there; unset, tracing is off and costs nothing",
    ),
    Var::new(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        Fallback::Described("`OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended for HTTP)"),
        "the traces endpoint itself, used as it is; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`",
    ),
    Var::new(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        Fallback::Value("http/protobuf"),
        "`http/protobuf` or `grpc` (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` wins when set); `http/json` is refused at start-up",
    ),
    Var::new(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        Fallback::Described("`OTEL_EXPORTER_OTLP_PROTOCOL`"),
        "the protocol for traces alone",
    ),
    Var::new(
        "OTEL_SERVICE_NAME",
        Fallback::Described(
            "`portcullis-auth`, `portcullis-gateway`, `portcullis-sockets`, or `portcullis` for the all-in-one binary",
        ),
        "the `service.name` of every span; each span also carries `portcullis.component` (`auth`, `gateway`, `sockets`)",
    ),
    Var::new("OTEL_SDK_DISABLED", Fallback::Value("false"), "`true` turns tracing off even with an endpoint set"),
    Var::new(
        "OTEL_EXPORTER_OTLP_HEADERS",
        Fallback::Unset,
        "`key=value,…` headers sent with every export (a collector's API key); read by the exporter",
    ),
    Var::new(
        "OTEL_TRACES_SAMPLER",
        Fallback::Value("parentbased_always_on"),
        "which traces are kept (with `OTEL_TRACES_SAMPLER_ARG`); read by the SDK. A trusted caller's sampled flag is followed, an untrusted caller's never",
    ),
    Var::new(
        "OTEL_BSP_SCHEDULE_DELAY",
        Fallback::Value("5000"),
        "milliseconds between exports of finished spans (with the other `OTEL_BSP_*` batch settings); read by the SDK",
    ),
];

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how spans are exported; `None` from [`Export::from_env`] means tracing is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub protocol: Protocol,
    /// The traces endpoint, as the exporter is given it.
    pub endpoint: String,
    pub service_name: String,
}

impl Export {
    /// Reads the standard variables; `default_name` is the binary's `service.name`.
    pub fn from_env(env: &dyn Env, default_name: &str) -> Result<Option<Self>, ConfigError> {
        let disabled = env.string("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let specific = env.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let generic = env.string("OTEL_EXPORTER_OTLP_ENDPOINT");
        let protocol_variable = if env.string("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        let protocol = match env.string(protocol_variable).as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(ConfigError::new(protocol_variable, format!("`{other}` is not http/protobuf or grpc")));
            }
        };
        let (variable, endpoint) = match (specific, generic) {
            _ if disabled => return Ok(None),
            (Some(endpoint), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
            (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, Some(base)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
            (None, None) => return Ok(None),
        };
        let authority = endpoint.strip_prefix("http://").map(|rest| rest.split('/').next().unwrap_or_default());
        if authority.is_none_or(str::is_empty) {
            return Err(ConfigError::new(variable, "must be an http:// URL with a host (no TLS is built in)"));
        }
        let service_name = env.string("OTEL_SERVICE_NAME").unwrap_or_else(|| default_name.to_owned());
        Ok(Some(Self { protocol, endpoint, service_name }))
    }
}

/// The provider spans go through, kept for [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Set once spans are exported: the request paths open spans only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (the request paths skip building them otherwise).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The crates whose spans are exported.
const OWN_TARGETS: [&str; 6] = ["auth_service", "gateway", "socket_service", "auth_contract", "platform", "portcullis"];

/// Spans (never events) of Portcullis's own crates, at `INFO` or above.
fn exported(meta: &Metadata<'_>) -> bool {
    let krate = meta.target().split("::").next().unwrap_or_default();
    meta.is_span() && *meta.level() <= tracing::Level::INFO && OWN_TARGETS.contains(&krate)
}

/// The layer that exports spans as `export` says; call inside the Tokio runtime (the gRPC
/// exporter's connection runs on it). Later calls keep the first provider.
pub(crate) fn layer(export: &Export) -> Result<Box<dyn Layer<Registry> + Send + Sync>, String> {
    let exporter = match export.protocol {
        Protocol::Grpc => {
            opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(export.endpoint.clone()).build()
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(export.endpoint.clone())
            .build(),
    }
    .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
    let resource = Resource::builder().with_service_name(export.service_name.clone()).build();
    let provider = PROVIDER
        .get_or_init(|| SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build());
    let tracer = provider.tracer("portcullis");
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(exported))
        .boxed())
}

/// Marks spans as exported, once the layer of [`layer`] is installed.
pub(crate) fn started() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Exports the spans still waiting; waits at most 5 s (a collector that is down does not
/// hold the process up).
pub fn shutdown() {
    let Some(provider) = PROVIDER.get().cloned() else { return };
    EXPORTING.store(false, Ordering::Relaxed);
    let (done, finished) = mpsc::channel();
    let started = std::thread::Builder::new().name("portcullis-otel-stop".to_owned()).spawn(move || {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        let _ = done.send(());
    });
    if started.is_ok() {
        let wait = || {
            let _ = finished.recv_timeout(Duration::from_secs(6));
        };
        // On a worker of a multi-threaded runtime, the others go on driving the exporter's
        // connection meanwhile.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, with non-zero ids (W3C Trace
/// Context §3.2); the trace it names, else `None`.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let b = value.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let well_formed = b.len() == 55
        && (b[2], b[35], b[52]) == (b'-', b'-', b'-')
        && hex(&b[..2])
        && &b[..2] != b"ff"
        && hex(&b[3..35])
        && hex(&b[36..52])
        && hex(&b[53..]);
    if !well_formed {
        return None;
    }
    let trace_id = TraceId::from_hex(&value[3..35]).ok()?;
    let span_id = SpanId::from_hex(&value[36..52]).ok()?;
    let flags = u8::from_str_radix(&value[53..], 16).ok()?;
    let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, TraceState::NONE);
    context.is_valid().then_some(context)
}

/// The `traceparent` naming `context`.
fn render(context: &SpanContext) -> Option<HeaderValue> {
    let flags = context.trace_flags().to_u8();
    let text = format!("00-{}-{}-{flags:02x}", context.trace_id(), context.span_id());
    HeaderValue::from_str(&text).ok()
}

/// A new trace's `traceparent` (`00-<trace id>-<parent id>-01`), for a request whose trace
/// is not continued while spans are not exported; written on the stack (every request that
/// brings none takes one).
pub fn new_traceparent() -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    uuid::Uuid::new_v4().simple().encode_lower(&mut text[3..35]);
    text[35] = b'-';
    let mut parent = [0u8; 32];
    uuid::Uuid::new_v4().simple().encode_lower(&mut parent);
    text[36..52].copy_from_slice(&parent[..16]);
    text[52..].copy_from_slice(b"-01");
    // Lower-case hex and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Makes `span` the continuation of the caller's trace (`traceparent`) when the caller is
/// `trusted`, its sampled flag included; otherwise `span` starts a new trace that links to the
/// caller's. Call before the span is first entered.
pub fn continue_trace(span: &Span, traceparent: Option<&HeaderValue>, trusted: bool) {
    let Some(caller) = traceparent.and_then(|v| v.to_str().ok()).and_then(parse_traceparent) else { return };
    if trusted {
        let _ = span.set_parent(Context::new().with_remote_span_context(caller));
    } else {
        span.add_link(caller);
    }
}

/// [`continue_trace`] for a request a service's HTTP listener took: trusted when its TCP
/// peer (axum's `ConnectInfo`) is in `trusted`. Does nothing while spans are not exported.
pub fn continue_request<B>(span: &Span, request: &http::Request<B>, trusted: &crate::net::TrustedProxies) {
    if !exporting() {
        return;
    }
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    continue_trace(span, request.headers().get(&TRACEPARENT), peer.is_some_and(|ip| trusted.contains(ip)));
}

/// The `traceparent` that continues `span`'s trace in a call it makes (`None` when spans are
/// not exported or `span` is not recorded).
pub fn traceparent_of(span: &Span) -> Option<HeaderValue> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let current = context.span();
    let span_context = current.span_context();
    span_context.is_valid().then(|| render(span_context)).flatten()
}

/// [`traceparent_of`] the current span: what an outgoing call carries.
pub fn current_traceparent() -> Option<HeaderValue> {
    if !exporting() {
        return None;
    }
    traceparent_of(&Span::current())
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn traceparent_rules() {
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let fresh = new_traceparent();
        let parsed = parse_traceparent(fresh.to_str().unwrap()).unwrap();
        assert!(parsed.is_sampled());
        assert_ne!(parse_traceparent(new_traceparent().to_str().unwrap()).unwrap().trace_id(), parsed.trace_id());
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_only_over_plain_http() {
        let read = |pairs: &[(&str, &str)]| Export::from_env(&MapEnv::new(pairs.iter().copied()), "portcullis-x");
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(), None);
        let http = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(http.endpoint, "http://collector:4318/v1/traces");
        assert_eq!((http.protocol, http.service_name.as_str()), (Protocol::HttpProtobuf, "portcullis-x"));
        let grpc = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "edge"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (grpc.endpoint.as_str(), grpc.protocol, grpc.service_name.as_str()),
            ("http://collector:4317", Protocol::Grpc, "edge")
        );
        let specific = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/traces"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint, "http://b:4318/traces");
        let off = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), ("OTEL_SDK_DISABLED", "TRUE")]);
        assert_eq!(off.unwrap(), None);
        let json =
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(json.unwrap_err().variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        for bad in ["https://a:4318", "a:4318", "http://"] {
            let err = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]).unwrap_err();
            assert_eq!(err.variable, "OTEL_EXPORTER_OTLP_ENDPOINT", "{bad}");
        }
    }

    /// Runs `f` under a subscriber that records every exported span in memory.
    fn recorded(f: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let layer =
            tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(filter_fn(exported));
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        provider.force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    fn request_span() -> Span {
        tracing::info_span!(target: "gateway::pipeline", parent: None, "request")
    }

    #[test]
    fn a_trusted_caller_is_continued_and_the_next_hop_continues_this_span() {
        let caller = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut outgoing = None;
        let spans = recorded(|| {
            let span = request_span();
            continue_trace(&span, Some(&caller), true);
            outgoing = span.in_scope(current_traceparent);
        });
        let [span] = spans.as_slice() else { panic!("{spans:?}") };
        let expected = parse_traceparent(caller.to_str().unwrap()).unwrap();
        assert_eq!(span.span_context.trace_id(), expected.trace_id());
        assert_eq!(span.parent_span_id, expected.span_id());
        assert!(span.links.is_empty());
        let outgoing = parse_traceparent(outgoing.unwrap().to_str().unwrap()).unwrap();
        assert_eq!((outgoing.trace_id(), outgoing.span_id()), (expected.trace_id(), span.span_context.span_id()));
    }

    #[test]
    fn a_trusted_callers_decision_not_to_sample_is_followed_and_passed_on() {
        let caller = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let mut outgoing = None;
        let spans = recorded(|| {
            let span = request_span();
            continue_trace(&span, Some(&caller), true);
            outgoing = span.in_scope(current_traceparent);
        });
        assert!(spans.is_empty(), "{spans:?}");
        let outgoing = parse_traceparent(outgoing.unwrap().to_str().unwrap()).unwrap();
        assert_eq!(outgoing.trace_id(), parse_traceparent(caller.to_str().unwrap()).unwrap().trace_id());
        assert!(!outgoing.is_sampled());
    }

    #[test]
    fn an_untrusted_caller_gets_a_new_sampled_trace_that_links_to_its_own() {
        // The caller asks for its trace not to be sampled: an untrusted caller is not obeyed.
        let caller = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let spans = recorded(|| {
            let span = request_span();
            continue_trace(&span, Some(&caller), false);
            span.in_scope(|| {
                let inner = tracing::info_span!(target: "auth_contract::client", "call");
                let _entered = inner.enter();
            });
        });
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        let caller = parse_traceparent(caller.to_str().unwrap()).unwrap();
        assert_ne!(request.span_context.trace_id(), caller.trace_id());
        assert_eq!(request.parent_span_id, SpanId::INVALID);
        assert!(request.span_context.is_sampled());
        let links: Vec<_> = request.links.iter().map(|l| l.span_context.clone()).collect();
        assert_eq!(links, vec![caller]);
        let call = spans.iter().find(|s| s.name == "call").unwrap();
        assert_eq!(call.span_context.trace_id(), request.span_context.trace_id());
        assert_eq!(call.parent_span_id, request.span_context.span_id());
    }

    #[test]
    fn a_services_http_request_continues_only_a_trusted_peers_trace() {
        let trusted = crate::net::TrustedProxies::parse("TRUSTED_PROXIES", Some("10.0.0.0/8")).unwrap();
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request_from = |peer: &str| {
            let mut request = http::Request::builder().header("traceparent", caller).body(()).unwrap();
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request
        };
        let caller = parse_traceparent(caller).unwrap();
        for (peer, continued) in [("10.1.2.3:4000", true), ("203.0.113.9:4000", false)] {
            let request = request_from(peer);
            let spans = recorded(|| {
                let span = tracing::info_span!(target: "auth_service::http", parent: None, "request");
                continue_request(&span, &request, &trusted);
            });
            let [span] = spans.as_slice() else { panic!("{spans:?}") };
            assert_eq!(span.span_context.trace_id() == caller.trace_id(), continued, "{peer}");
            assert_eq!(span.links.len(), usize::from(!continued), "{peer}");
        }
    }

    #[test]
    fn only_own_spans_are_exported_never_events() {
        let spans = recorded(|| {
            let own = tracing::info_span!(target: "auth_service::http", "request");
            own.in_scope(|| tracing::info!(target: "auth_service::http", email = "a@example.com", "an event"));
            let _ = tracing::info_span!(target: "hyper::client", "connect").entered();
            let _ = tracing::debug_span!(target: "gateway::x", "detail").entered();
        });
        let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["request"]);
        assert!(spans[0].events.is_empty(), "{:?}", spans[0].events);
    }
}
