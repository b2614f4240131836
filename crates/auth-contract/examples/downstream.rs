//! A service behind the Portcullis gateway: no token code, no auth-service client, only the
//! signed context the gateway adds to every request it lets through.
//!
//! ```text
//! CONTEXT_SIGNING_SECRET=… PORT=9001 cargo run -p auth-contract --example downstream
//! ```
//!
//! with a gateway route such as
//!
//! ```toml
//! [[routes]]
//! prefix = "/v1/user/orders"
//! upstream = "http://127.0.0.1:9001"
//! scopes = ["orders:read"]
//! ```

use auth_contract::{extract::Rejection, extract::VerifiedContext, headers::ContextKey};
use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

/// Whoever the gateway authenticated: a user, a PAT, an SDK user or a client's server.
async fn list_orders(VerifiedContext(ctx): VerifiedContext) -> Json<Value> {
    Json(json!({
        "owner": ctx.subject,
        "tenant": ctx.tenant_id,
        "via": ctx.kind.as_str(),
        "orders": [],
    }))
}

/// A finer check than the route's own: the handler demands one more scope.
async fn cancel_order(context: VerifiedContext) -> Result<Json<Value>, Rejection> {
    context.require_scope("orders:write")?;
    Ok(Json(json!({"cancelled": true, "by": context.0.subject})))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("CONTEXT_SIGNING_SECRET").unwrap_or_default();
    if secret.len() < 32 {
        eprintln!("downstream: CONTEXT_SIGNING_SECRET must be the gateway's value (at least 32 bytes)");
        std::process::exit(2);
    }
    // During a rotation the gateway may still sign with an older secret for a while.
    let previous = std::env::var("CONTEXT_SIGNING_PREVIOUS_SECRETS").unwrap_or_default();
    let key = ContextKey::with_previous(&secret, previous.split(',').map(str::trim).filter(|s| !s.is_empty()));
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001);
    let app = Router::new()
        .route("/v1/user/orders", get(list_orders))
        .route("/v1/user/orders/cancel", axum::routing::post(cancel_order))
        .with_state(key);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("downstream service on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
