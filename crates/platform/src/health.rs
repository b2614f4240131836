//! `<binary> health`: the container health check. Runtime images carry no curl, so every
//! binary can ask its own `/health` over loopback (the address it is configured to listen on;
//! an unspecified one such as `0.0.0.0` is asked on loopback) and exit 0 when it answers 200,
//! 1 otherwise, within [`TIMEOUT`]. Compose and Kubernetes health checks run it.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    process::ExitCode,
    time::Duration,
};

/// How long one probe may take to connect, and then to be answered.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the binary was started as `<binary> health`.
pub fn requested() -> bool {
    std::env::args().nth(1).is_some_and(|arg| arg == "health")
}

/// Where a listener bound to `addr` is reached from the same host: a wildcard address on
/// loopback, any other as it is.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `GET /health` on `addr`: `Ok` when it answers 200.
pub fn check(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    // The status line is all that is needed; stop at its end or when the buffer is full.
    while read < head.len() && !head[..read].contains(&b'\n') {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.lines().next().unwrap_or_default().split(' ').nth(1).unwrap_or_default();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{addr}: /health answered {:?}", status_line.lines().next().unwrap_or_default()))
    }
}

/// Checks every listener of `service` (its configured addresses) and reports: exit 0 when all
/// answer 200, else 1 with the first failure on stderr.
pub fn probe(service: &str, addrs: &[SocketAddr]) -> ExitCode {
    for addr in addrs {
        if let Err(err) = check(reachable(*addr)) {
            eprintln!("{service}: unhealthy: {err}");
            return ExitCode::FAILURE;
        }
    }
    println!("{service}: healthy");
    ExitCode::SUCCESS
}

/// [`probe`] on the addresses a service's configuration names, or exit 1 naming what in the
/// configuration is wrong.
pub fn probe_configured<E: std::fmt::Display>(service: &str, addrs: Result<Vec<SocketAddr>, E>) -> ExitCode {
    match addrs {
        Ok(addrs) => probe(service, &addrs),
        Err(err) => {
            eprintln!("{service}: unhealthy: configuration: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A listener answering each connection with `answer`, once.
    fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 256];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn a_200_is_healthy_and_anything_else_is_not() {
        assert_eq!(check(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")), Ok(()));
        let err = check(answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")).unwrap_err();
        assert!(err.contains("503"), "{err}");
        assert!(check(answering(b"")).is_err());
        assert!(check(answering(b"garbage without a status")).is_err());
    }

    #[test]
    fn a_configuration_error_is_unhealthy() {
        assert_eq!(probe_configured("test", Err::<Vec<SocketAddr>, _>("PORT: not a number")), ExitCode::FAILURE);
    }

    #[test]
    fn a_closed_port_is_unhealthy() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(check(addr).is_err());
        assert_eq!(probe("test", &[addr]), ExitCode::FAILURE);
    }

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        assert_eq!(reachable("0.0.0.0:8080".parse().unwrap()), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(reachable("[::]:8080".parse().unwrap()), "[::1]:8080".parse().unwrap());
        assert_eq!(reachable("10.0.0.5:8080".parse().unwrap()), "10.0.0.5:8080".parse().unwrap());
    }
}
