//! The simulated user's HTTP client: `godwit-bench http-probe` (hidden), run in a user's netns.
//!
//! Opens one TCP connection and sends plain HTTP/1.1 GETs on it one after the other, timing
//! each from the first byte written to the last byte of the body read. A connection the
//! server closes is reopened (and that request's time includes the new connect). Prints one
//! JSON line ([`HttpOutput`]).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// `godwit-bench http-probe` (run by `godwit-bench world` through nsenter).
#[derive(clap::Args, Debug, Clone)]
pub struct HttpProbeArgs {
    /// Where to connect
    #[arg(long)]
    pub addr: SocketAddr,
    /// The Host header
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Requests sent in all (the caller decides which are warm-ups)
    #[arg(long, default_value_t = 22)]
    pub count: u32,
    /// Seconds one request may take
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// One request's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Exchange {
    /// HTTP status; 0 when the request failed (see `error`).
    pub(crate) status: u16,
    pub(crate) micros: u64,
    /// The first 200 bytes of the body, or the error.
    pub(crate) body: String,
    /// Whether this request opened a new connection.
    pub(crate) connected: bool,
}

/// What `http-probe` prints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HttpOutput {
    /// The first connect, microseconds.
    pub(crate) connect_us: u64,
    pub(crate) exchanges: Vec<Exchange>,
}

/// Runs the client (see the module doc).
pub fn run_http_probe(args: &HttpProbeArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let started = Instant::now();
    let mut conn = Some(connect(args.addr, timeout)?);
    let mut output = HttpOutput {
        connect_us: micros(started.elapsed()),
        exchanges: Vec::new(),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: godwit-bench\r\n\r\n",
        args.path, args.host
    );
    for _ in 0..args.count {
        let started = Instant::now();
        let connected = conn.is_none();
        let result = match conn.take() {
            Some(c) => Ok(c),
            None => connect(args.addr, timeout),
        }
        .and_then(|mut c| {
            exchange(&mut c, &request).map(|(status, body, keep)| (c, status, body, keep))
        });
        let took = micros(started.elapsed());
        match result {
            Ok((c, status, body, keep)) => {
                if keep {
                    conn = Some(c);
                }
                output.exchanges.push(Exchange {
                    status,
                    micros: took,
                    body,
                    connected,
                });
            }
            Err(error) => output.exchanges.push(Exchange {
                status: 0,
                micros: took,
                body: format!("{error:#}"),
                connected,
            }),
        }
    }
    let line = serde_json::to_string(&output).context("encode the output")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush())?;
    Ok(())
}

struct Conn {
    reader: BufReader<TcpStream>,
}

fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Conn> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(Conn {
        reader: BufReader::new(stream),
    })
}

/// Sends `request` and reads the whole response: `(status, body head, keep-alive)`.
fn exchange(conn: &mut Conn, request: &str) -> anyhow::Result<(u16, String, bool)> {
    conn.reader
        .get_mut()
        .write_all(request.as_bytes())
        .context("send the request")?;
    let mut line = String::new();
    conn.reader
        .read_line(&mut line)
        .context("read the status line")?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status line: {line:?}"))?;
    let mut length = None;
    let mut keep = true;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        let n = conn
            .reader
            .read_line(&mut header)
            .context("read a header")?;
        anyhow::ensure!(n > 0, "the connection closed in the response head");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            keep = !value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        read_chunked(&mut conn.reader)?
    } else if let Some(length) = length {
        let mut body = vec![0; length];
        conn.reader.read_exact(&mut body).context("read the body")?;
        body
    } else {
        let mut body = Vec::new();
        conn.reader
            .read_to_end(&mut body)
            .context("read the body")?;
        keep = false;
        body
    };
    let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Ok((status, head, keep))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).context("read a chunk size")?;
        let hex = size.trim().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {size:?}"))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).context("read a chunk")?;
        if size == 0 {
            // The last chunk's CRLF was read; trailers are not used by the apps measured.
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;

    use super::*;

    /// A real server on 127.0.0.1:0 answers three requests on one connection: a sized body,
    /// a chunked one, then one that closes the connection.
    #[test]
    fn sized_chunked_and_closing_answers_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().expect("a bound address");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept the client");
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut writer = stream;
            let answers = [
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye",
            ];
            for answer in answers {
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("read the request");
                    if line == "\r\n" {
                        break;
                    }
                }
                writer.write_all(answer.as_bytes()).expect("answer");
            }
        });
        let mut conn = connect(addr, Duration::from_secs(5)).expect("connect");
        let request = "GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let first = exchange(&mut conn, request).expect("first answer");
        assert_eq!(first, (200, "hello".to_owned(), true));
        let second = exchange(&mut conn, request).expect("second answer");
        assert_eq!(second, (404, "abcde".to_owned(), true));
        let third = exchange(&mut conn, request).expect("third answer");
        assert_eq!(third, (200, "bye".to_owned(), false));
        server.join().expect("the server thread");
    }
}
