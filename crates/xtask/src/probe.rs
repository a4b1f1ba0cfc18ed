//! Readiness checks, spoken directly over TCP.
//!
//! Each probe is a few bytes of a wire protocol (a bare connect, Redis RESP,
//! HTTP/1.0) so xtask needs no client libraries and compiles in seconds.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// Upper bound for establishing a connection: everything probed is local.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Upper bound for a reply, so a wedged process reads as unhealthy instead of hanging xtask.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How to tell that a component is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// Redis at `host:port` answers `PING` with `+PONG`.
    RedisPing(String),
    /// `GET /readyz` on the admin `host:port` returns 200.
    HttpReady(String),
}

impl Probe {
    /// Runs the probe once; the error says what was wrong.
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Self::Tcp(addr) => connect(addr).map(drop),
            Self::RedisPing(addr) => redis_ping(addr),
            Self::HttpReady(addr) => match http_get_status(addr, "/readyz")? {
                200 => Ok(()),
                status => bail!("GET /readyz returned {status}"),
            },
        }
    }

    /// What the probe checks, for progress output.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Tcp(addr) => format!("a TCP connection to {addr}"),
            Self::RedisPing(addr) => format!("PONG from {addr}"),
            Self::HttpReady(addr) => format!("200 from http://{addr}/readyz"),
        }
    }
}

/// Opens a TCP connection to `addr` (`host:port`), trying every address it resolves to.
pub(crate) fn connect(addr: &str) -> Result<TcpStream> {
    let mut last_error = None;
    for socket_addr in addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
    {
        match TcpStream::connect_timeout(&socket_addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(stream);
            }
            Err(err) => last_error = Some(err),
        }
    }
    match last_error {
        Some(err) => Err(err).with_context(|| format!("cannot connect to {addr}")),
        None => bail!("{addr} resolves to no address"),
    }
}

/// Sends a RESP `PING` and expects `+PONG`.
fn redis_ping(addr: &str) -> Result<()> {
    let mut stream = connect(addr)?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let reply = read_line(&stream)?;
    if reply == "+PONG" {
        Ok(())
    } else {
        // e.g. `-LOADING …` while Redis is still reading its data set.
        bail!("PING answered `{reply}`")
    }
}

/// Sends `GET path` as HTTP/1.0 and returns the response status code.
fn http_get_status(addr: &str, path: &str) -> Result<u16> {
    let mut stream = connect(addr)?;
    // HTTP/1.0 makes the server close the connection after one response: no
    // chunking, no keep-alive. One write, so the request arrives as one segment.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: xtask\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let status_line = read_line(&stream)?;
    // "HTTP/1.1 200 OK"
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: `{status_line}`"))
}

/// Reads one CRLF-terminated line.
fn read_line(stream: &TcpStream) -> Result<String> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        bail!("connection closed without a reply");
    }
    Ok(line.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::TcpListener, thread};

    use super::*;

    /// Serves one connection with a canned reply and returns the listener's address.
    fn serve_once(reply: &'static [u8]) -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0; 256];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(reply);
            }
        });
        Ok(addr)
    }

    #[test]
    fn http_probe_accepts_200_only() -> Result<()> {
        Probe::HttpReady(serve_once(b"HTTP/1.1 200 OK\r\n\r\nready")?).check()?;
        let unready = Probe::HttpReady(serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")?);
        assert!(unready.check().is_err());
        Ok(())
    }

    #[test]
    fn redis_probe_wants_pong() -> Result<()> {
        Probe::RedisPing(serve_once(b"+PONG\r\n")?).check()?;
        let loading = Probe::RedisPing(serve_once(b"-LOADING Redis is loading\r\n")?);
        assert!(loading.check().is_err());
        Ok(())
    }

    #[test]
    fn tcp_probe_fails_on_a_closed_port() -> Result<()> {
        // Bind then drop, so the port is very likely closed.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
        assert!(Probe::Tcp(addr).check().is_err());
        Ok(())
    }
}
