//! Dependencies going down: the auth service answers 503 `unavailable` with `Retry-After`,
//! never a 500 and never a success it could not check. Runs on PostgreSQL + Redis, where an
//! outage can be caused for real: the database is dropped under the running service, and the
//! service's own Redis server is killed.

use std::{process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, FIREFOX, PASSWORD, expect_problem, spawn_app_with, unique_email};

async fn expect_unavailable(response: reqwest::Response) {
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    expect_problem(response, 503, "unavailable").await;
    assert_eq!(retry_after.as_deref(), Some("5"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A Redis server of this test's own, so it can be killed without touching anyone else's.
async fn own_redis() -> (tokio::process::Child, String) {
    let port = free_port();
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed where the PostgreSQL + Redis tests run");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed() {
    let Some(Backend::Postgres { database_url, .. }) = Backend::shared() else {
        return;
    };
    let (mut redis, redis_url) = own_redis().await;
    let app = spawn_app_with(Backend::Postgres { database_url, redis_url }, &[]).await;
    let email = unique_email("redis-down");
    app.signup(&email).await;
    redis.kill().await.expect("kill redis");
    redis.wait().await.expect("reap redis");
    // Failed-login limits cannot be checked: login is refused, not let through unlimited.
    expect_unavailable(app.login_as(&email, PASSWORD, FIREFOX).await).await;
    let ready = app.http.get(format!("{}/ready", app.root)).send().await.expect("ready");
    expect_unavailable(ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_fails_closed() {
    let Some(backend @ Backend::Postgres { .. }) = Backend::shared() else {
        return;
    };
    let Backend::Postgres { database_url: admin_url, .. } = &backend else {
        return;
    };
    let app = spawn_app_with(backend.clone(), &[]).await;
    let email = unique_email("db-down");
    let user = app.signup(&email).await;
    let database = match &app.raw {
        crate::helpers::RawStore::Postgres(store) => {
            sqlx::query_scalar::<_, String>("SELECT current_database()").fetch_one(store.pool()).await.expect("name")
        }
        crate::helpers::RawStore::Sqlite(_) => unreachable!("a PostgreSQL backend"),
    };
    {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database} WITH (FORCE)")))
            .execute(&mut admin)
            .await
            .expect("drop the service's database");
    }
    expect_unavailable(app.login_as(&email, PASSWORD, FIREFOX).await).await;
    expect_unavailable(
        app.post_json("/signup", &json!({"name": "N", "email": unique_email("db-down-2"), "password": PASSWORD})).await,
    )
    .await;
    expect_unavailable(app.refresh(&user.refresh).await).await;
    expect_unavailable(app.get_auth("/sessions", &user.access).await).await;
    let ready = app.http.get(format!("{}/ready", app.root)).send().await.expect("ready");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}
