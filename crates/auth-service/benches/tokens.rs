//! Access-token signing and verification (the CPU cost of every authenticated request before
//! any cache), and opaque-credential parsing and hashing.

// Benchmarks read the wall clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;

use auth_service::tokens::{Credential, KeyRing, Kind, NewToken, TokenType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

fn ring() -> KeyRing {
    KeyRing::new(
        &SecretString::from("bench-secret-0123456789abcdef0123456789abcdef".to_owned()),
        &[SecretString::from("previous-secret-0123456789abcdef0123456789".to_owned())],
        "portcullis",
        "portcullis",
    )
}

fn sign(ring: &KeyRing, now: OffsetDateTime, scopes: &[String]) -> String {
    ring.sign(&NewToken {
        typ: TokenType::Access,
        subject: "5f0c6c1e-7d4e-4d8e-9a51-6b1f2f0e9c11",
        tenant: None,
        session: Some("0b7f5c2a-3e1d-4f6b-8c9a-1d2e3f4a5b6c"),
        jti: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        role: "member",
        scopes,
        issued_at: now,
        expires_at: now + Duration::minutes(15),
    })
    .map(|(token, _)| token)
    .unwrap_or_default()
}

fn access_tokens(c: &mut Criterion) {
    let ring = ring();
    let now = OffsetDateTime::now_utc();
    let scopes = vec!["*".to_owned()];
    let token = sign(&ring, now, &scopes);
    assert!(ring.verify(&token, TokenType::Access, now).is_ok(), "benchmark token must verify");

    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| sign(black_box(&ring), now, &scopes)));
    group.bench_function("verify", |b| b.iter(|| ring.verify(black_box(&token), TokenType::Access, now)));
    group.bench_function("sign_and_verify", |b| {
        b.iter(|| {
            let t = sign(black_box(&ring), now, &scopes);
            ring.verify(&t, TokenType::Access, now)
        });
    });
    group.finish();
}

fn opaque_credentials(c: &mut Criterion) {
    let credential = Credential::generate(Kind::Refresh);
    let text = credential.expose().to_owned();
    let mut group = c.benchmark_group("opaque_credential");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate", |b| b.iter(|| Credential::generate(Kind::Refresh)));
    group.bench_function("parse_and_hash", |b| {
        b.iter(|| Credential::parse(Kind::Refresh, black_box(&text)).map(|c| c.hash()));
    });
    group.finish();
}

criterion_group!(benches, access_tokens, opaque_credentials);
criterion_main!(benches);
