//! A bare tonic server for the contract benchmark's floor: `Validate` answers a fixed valid
//! context at once (no service token checked, nothing looked up), with the auth service's own
//! server settings (`TCP_NODELAY`, two runtime workers). Run in a process of its own
//! (`BENCH_SERVE_ECHO`), so it is measured the way the real auth service is; every other call
//! is `unimplemented`, since the benchmark makes none.

#![allow(clippy::expect_used, dead_code)]

use auth_contract::proto::{
    self, AuthContext, CheckContextRequest, CheckContextResponse, CreateSdkSessionRequest, CreateSdkSessionResponse,
    Empty, IssueServiceTokenRequest, IssueServiceTokenResponse, ListAllowedOriginsResponse, RefreshRequest,
    RefreshResponse, ValidateApiKeyRequest, ValidateBatchRequest, ValidateBatchResponse, ValidateRequest,
    ValidateResponse,
    auth_internal_server::{AuthInternal, AuthInternalServer},
};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

/// The variable that turns the benchmark binary into the echo server.
pub const SERVE_ECHO: &str = "BENCH_SERVE_ECHO";

struct Echo {
    answer: ValidateResponse,
}

/// An answer the size of a real one: a user's context with a session, a jti and scopes.
fn canned() -> ValidateResponse {
    let id = |n: u8| format!("0190f1c2-7a3b-7c4d-8e5f-{n:012}");
    ValidateResponse {
        valid: true,
        context: Some(AuthContext {
            subject: id(1),
            kind: proto::CredentialKind::User as i32,
            user_id: id(1),
            session_id: id(2),
            credential_id: id(3),
            role: "member".to_owned(),
            scopes: vec!["*".to_owned()],
            expires_at: 4_102_444_800,
            ..AuthContext::default()
        }),
        cache_ttl_seconds: 60,
        ..ValidateResponse::default()
    }
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the echo server answers Validate only"))
}

#[tonic::async_trait]
impl AuthInternal for Echo {
    async fn validate(&self, _request: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }

    async fn validate_batch(
        &self,
        _request: Request<ValidateBatchRequest>,
    ) -> Result<Response<ValidateBatchResponse>, Status> {
        unused()
    }

    async fn check_context(
        &self,
        _request: Request<CheckContextRequest>,
    ) -> Result<Response<CheckContextResponse>, Status> {
        unused()
    }

    async fn validate_api_key(
        &self,
        _request: Request<ValidateApiKeyRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        unused()
    }

    async fn list_allowed_origins(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<ListAllowedOriginsResponse>, Status> {
        unused()
    }

    async fn create_sdk_session(
        &self,
        _request: Request<CreateSdkSessionRequest>,
    ) -> Result<Response<CreateSdkSessionResponse>, Status> {
        unused()
    }

    async fn refresh(&self, _request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        unused()
    }

    async fn issue_service_token(
        &self,
        _request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        unused()
    }
}

/// Serves the echo on a free loopback port, prints `port=<n>` and runs until killed.
pub fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        println!("port={}", listener.local_addr().expect("addr").port());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(AuthInternalServer::new(Echo { answer: canned() }))
            .serve_with_incoming(incoming)
            .await
            .expect("serve");
    });
}

/// The echo server in a child process: this benchmark binary again, with [`SERVE_ECHO`] set.
/// Returns the child (killed on drop) and its gRPC URL.
pub fn spawn() -> (Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(SERVE_ECHO, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the echo server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the echo server's port");
    let port = line.trim().strip_prefix("port=").expect("port=<n>").to_owned();
    (Child(child), format!("http://127.0.0.1:{port}"))
}

/// A child process killed when dropped.
pub struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
