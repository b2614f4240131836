//! The HTTP surface: the router with every public route under `/api/v1/auth`, the
//! operational routes at the root, the OpenAPI document generated from the handlers, and the
//! middleware stack (request id, tracing, panics, body limit, security headers).

pub mod dto;
pub mod error;
pub mod extract;
pub mod routes;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tower_http::{catch_panic::CatchPanicLayer, set_header::SetResponseHeaderLayer};
use utoipa::{
    Modify, OpenApi, ToResponse,
    openapi::{
        Ref, RefOr, Schema, SchemaFormat,
        path::ParameterIn,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::Error, service::AuthService};

pub const API_PREFIX: &str = "/api/v1/auth";
pub static REQUEST_ID_HEADER: HeaderName = platform::request_id::X_REQUEST_ID;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis auth service", description = "Identity, sessions and credentials."),
    modifiers(&BearerScheme),
    components(schemas(error::Problem), responses(error::Problem))
)]
struct ApiDoc;

/// What a route answers because of what it shares with others (the layers, and the extractors
/// its shape implies) rather than because of its handler. Statuses, each the shared
/// [`error::Problem`] response: every route may fail as 500; a route with a credential as
/// 401, and as 429 once its caller has failed too often; a route with a JSON body as 400
/// (malformed), 413 (too large), 415 (not JSON) and 422 (invalid); a route with an id in its
/// path as 404. And every parameter in a path is an id, a UUID (anything else names nothing:
/// 404).
fn add_shared_rules(openapi: &mut utoipa::openapi::OpenApi) {
    let problem = || RefOr::Ref(Ref::from_response_name(<error::Problem as ToResponse>::response().0));
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && parameter.parameter_in == ParameterIn::Path
                    && let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema
                {
                    schema.format = Some(SchemaFormat::Custom("uuid".to_owned()));
                }
            }
            let mut statuses = vec!["500"];
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                statuses.extend(["401", "429"]);
            }
            if operation.request_body.is_some() {
                statuses.extend(["400", "413", "415", "422"]);
            }
            if path.contains('{') {
                statuses.push("404");
            }
            for status in statuses {
                operation.responses.responses.entry(status.to_owned()).or_insert_with(problem);
            }
        }
    }
}

/// The routes with the OpenAPI document describing them.
fn documented_routes() -> (Router<AuthService>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(API_PREFIX, api_routes())
        .routes(routes!(routes::system::health))
        .routes(routes!(routes::system::ready))
        .routes(routes!(routes::system::metrics))
        .split_for_parts();
    add_shared_rules(&mut openapi);
    (router, openapi)
}

/// The OpenAPI 3.1 document the auth service serves at `/openapi.json`, pretty-printed (the
/// gateway's document is generated from it: `cargo xtask openapi`).
pub fn openapi_json() -> String {
    documented_routes().1.to_pretty_json().unwrap_or_default()
}

fn api_routes() -> OpenApiRouter<AuthService> {
    OpenApiRouter::new()
        .routes(routes!(routes::auth::config))
        .routes(routes!(routes::auth::signup))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::me))
        .routes(routes!(routes::auth::password))
        .routes(routes!(routes::sessions::current))
        .routes(routes!(routes::sessions::list, routes::sessions::end_others))
        .routes(routes!(routes::sessions::end_one))
        .routes(routes!(routes::sessions::activity))
        .routes(routes!(routes::sessions::audit))
        .routes(routes!(routes::credentials::create, routes::credentials::list))
        .routes(routes!(routes::credentials::revoke))
        .routes(routes!(routes::credentials::limits))
        .routes(routes!(routes::clients::register))
        .routes(routes!(routes::clients::list))
        .routes(routes!(routes::clients::get_one))
        .routes(routes!(routes::clients::create_key, routes::clients::list_keys))
        .routes(routes!(routes::clients::rotate_key))
        .routes(routes!(routes::clients::revoke_key))
        .routes(routes!(routes::clients::get_ip_allowlist, routes::clients::put_ip_allowlist))
        .routes(routes!(routes::clients::get_origins, routes::clients::put_origins))
        .routes(routes!(routes::clients::get_rate_limit, routes::clients::put_rate_limit))
        .routes(routes!(routes::sdk::create))
        .routes(routes!(routes::admin::users))
        .routes(routes!(routes::admin::disable))
        .routes(routes!(routes::admin::enable))
        .routes(routes!(routes::admin::role))
        .routes(routes!(routes::internal::validate, routes::internal::validate_post))
        .routes(routes!(routes::internal::validate_api_key))
}

/// The full router with its OpenAPI document.
pub fn router(service: AuthService) -> Router {
    let (router, openapi) = documented_routes();
    let document: Arc<str> = openapi.to_pretty_json().unwrap_or_default().into();
    let body_limit = service.config().body_limit;
    router
        .route(
            platform::media::OPENAPI_PATH,
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document.to_string()) }
            }),
        )
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| Error::Internal("a request handler panicked".to_owned()).into_response()))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(middleware::from_fn_with_state(service.clone(), request_context))
        .with_state(service)
}

/// Assigns or keeps `X-Request-Id`, makes it available to error bodies, logs one line per
/// request (method, path without query, status, latency: never headers or bodies) and counts
/// it.
async fn request_context(
    axum::extract::State(service): axum::extract::State<AuthService>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = platform::request_id::keep_or_new(request.headers());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID_HEADER.clone(), value);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    // The span's fields are what a trace exports: the route's template, never the path a
    // client wrote.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        http.route = %route,
        otel.kind = "server",
        portcullis.component = "auth",
    );
    platform::otel::continue_request(&span, &request, &service.config().trusted_proxies);
    let mut response =
        error::REQUEST_ID.scope(id.clone(), tracing::Instrument::instrument(next.run(request), span.clone())).await;
    let status = response.status();
    span.in_scope(|| {
        tracing::info!(%path, status = status.as_u16(), latency_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    });
    service.metrics().http_requests.with_label_values(&[method.as_str(), status.as_str()]).inc();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Every 4xx and 5xx an operation lists is the one shared problem response, whose content
    /// type is the one the error renderer sends.
    #[test]
    fn every_error_answer_is_the_shared_problem_response() {
        let document: Value = serde_json::from_str(&openapi_json()).unwrap();
        let problem = &document["components"]["responses"]["Problem"];
        assert!(problem["content"].get(auth_contract::problem::CONTENT_TYPE).is_some(), "{problem}");
        let mut errors = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(response["$ref"], "#/components/responses/Problem", "{method} {path} {status}");
                        errors += 1;
                    }
                }
            }
        }
        assert!(errors > 50, "{errors}");
    }

    /// Statuses a route's shape implies are listed without its annotation naming them.
    #[test]
    fn shared_statuses_follow_the_shape_of_each_route() {
        let document: Value = serde_json::from_str(&openapi_json()).unwrap();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            document["paths"][path][method]["responses"].as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(statuses("/health", "get"), ["200", "500"]);
        let login = statuses("/api/v1/auth/login", "post");
        for status in ["400", "413", "415", "422", "500"] {
            assert!(login.contains(&status.to_owned()), "login lacks {status}: {login:?}");
        }
        let revoke = statuses("/api/v1/auth/tokens/{id}", "delete");
        for status in ["401", "404", "429", "500"] {
            assert!(revoke.contains(&status.to_owned()), "token revocation lacks {status}: {revoke:?}");
        }
        let id = &document["paths"]["/api/v1/auth/tokens/{id}"]["delete"]["parameters"][0];
        assert_eq!((&id["in"], &id["schema"]["format"]), (&Value::from("path"), &Value::from("uuid")), "{id}");
    }
}
