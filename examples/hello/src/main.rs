//! `hello`: the example app Godwit deploys in its quickstart and end-to-end tests.
//!
//! A tiny HTTP/1.1 server (std only, thread per connection, keep-alive) on `0.0.0.0:$PORT`
//! (default 8080):
//! - `/` answers `hello from machine <FLY_MACHINE_ID> in <FLY_REGION> (version <FLY_MACHINE_VERSION>)`
//! - `/healthz` answers `ok`
//! - `/env/<NAME>` answers the value of that environment variable (404 when unset)
//! - `/exit/<code>` answers, then exits the process with that code
//! - `/sleep/<ms>` answers `slept <ms> ms in <FLY_REGION>` after that long (load and
//!   hard-limit tests; at most 60 s)
//! - `/primary/<region>` (any method) is the classic "writes go to the primary" app: outside
//!   `<region>` (by `FLY_REGION`) it answers 409 with `fly-replay: region=<region>`, so the
//!   proxy replays the request there; in `<region>` it answers `written in <region>`
//! - `/headers` answers the request's headers, one `name: value` line each (names lower-case)
//!
//! Every method is accepted on `/primary/…`; elsewhere only GET and HEAD.
//!
//! `hello env [NAME]` prints the environment (or one variable) and exits: handy for `exec`.
//!
//! SIGTERM and SIGINT print `shutting down` and exit 0 (it runs as PID 1 in its machine, where
//! signals without a handler are ignored). Built static, it runs in an otherwise empty rootfs.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a program whose output is its interface

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

mod signals;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("env") {
        print_env(args.get(1).map(String::as_str));
    }
    signals::install();
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    let addr = format!("0.0.0.0:{port}");
    let listener = match TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hello: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "hello listening on {addr} (machine {}, region {}, version {})",
        env_or("FLY_MACHINE_ID", "unknown"),
        env_or("FLY_REGION", "unknown"),
        env_or("FLY_MACHINE_VERSION", "unknown"),
    );
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = serve_connection(stream) {
                        eprintln!("hello: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("hello: accept failed: {e}"),
        }
    }
}

/// `hello env [NAME]`: prints `KEY=VALUE` lines, sorted (or one variable's value), then exits.
fn print_env(name: Option<&str>) -> ! {
    match name {
        Some(name) => match std::env::var(name) {
            Ok(value) => println!("{value}"),
            Err(_) => {
                eprintln!("{name} is not set");
                std::process::exit(1);
            }
        },
        None => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (key, value) in vars {
                println!("{key}={value}");
            }
        }
    }
    std::process::exit(0);
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One parsed request head: what the router needs.
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: usize,
    /// `(lower-case name, value)` in order.
    headers: Vec<(String, String)>,
}

/// What to send back, and whether to exit afterwards.
struct Response {
    status: u16,
    body: String,
    exit_code: Option<i32>,
    /// Extra `(name, value)` response headers.
    headers: Vec<(String, String)>,
}

/// The longest `/sleep/<ms>`.
const MAX_SLEEP_MS: u64 = 60_000;

fn serve_connection(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    // One buffered write per response: unbuffered `write!` sends the head and body as several
    // small segments, and on a kept-alive connection Nagle then waits for a delayed ACK (~40 ms).
    stream.set_nodelay(true)?;
    let mut writer = std::io::BufWriter::new(stream.try_clone()?);
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        // Drain a body we do not use, so the next request on the connection parses.
        if request.content_length > 0 {
            let mut body = vec![0; request.content_length];
            std::io::Read::read_exact(&mut reader, &mut body)?;
        }
        let response = route(&request);
        let reason = match response.status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            _ => "Bad Request",
        };
        let connection = if request.keep_alive && response.exit_code.is_none() {
            "keep-alive"
        } else {
            "close"
        };
        let extra: String = response
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        write!(
            writer,
            "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             {extra}content-length: {}\r\nconnection: {connection}\r\n\r\n{}",
            response.status,
            response.body.len(),
            if request.method == "HEAD" {
                ""
            } else {
                &response.body
            },
        )?;
        writer.flush()?;
        if let Some(code) = response.exit_code {
            println!("exiting with code {code} as asked");
            std::process::exit(code);
        }
        if connection == "close" {
            return Ok(());
        }
    }
}

/// Reads one request head; `None` when the peer closed the connection between requests.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let version = parts.next().unwrap_or("HTTP/1.0").to_owned();
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        headers.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        if name.eq_ignore_ascii_case("connection") {
            keep_alive = value.eq_ignore_ascii_case("keep-alive");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().unwrap_or(0);
        }
    }
    Ok(Some(Request {
        method,
        path,
        keep_alive,
        content_length,
        headers,
    }))
}

fn route(request: &Request) -> Response {
    let path = request.path.split('?').next().unwrap_or("/");
    if let Some(primary) = path.strip_prefix("/primary/") {
        return write_in_primary(primary);
    }
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "only GET and HEAD are supported\n");
    }
    if path == "/" {
        return Response::text(
            200,
            &format!(
                "hello from machine {} in {} (version {})\n",
                env_or("FLY_MACHINE_ID", "unknown"),
                env_or("FLY_REGION", "unknown"),
                env_or("FLY_MACHINE_VERSION", "unknown"),
            ),
        );
    }
    if path == "/healthz" {
        return Response::text(200, "ok");
    }
    if let Some(name) = path.strip_prefix("/env/") {
        return match std::env::var(name) {
            Ok(value) => Response::text(200, &value),
            Err(_) => Response::text(404, &format!("{name} is not set\n")),
        };
    }
    if let Some(code) = path.strip_prefix("/exit/") {
        return match code.parse::<i32>() {
            Ok(code) => Response {
                status: 200,
                body: format!("exiting with code {code}\n"),
                exit_code: Some(code),
                headers: Vec::new(),
            },
            Err(_) => Response::text(400, "the exit code must be an integer\n"),
        };
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_SLEEP_MS => {
                std::thread::sleep(Duration::from_millis(ms));
                let region = env_or("FLY_REGION", "unknown");
                Response::text(200, &format!("slept {ms} ms in {region}\n"))
            }
            _ => Response::text(400, "sleep 0 to 60000 ms\n"),
        };
    }
    if path == "/headers" {
        let lines: String = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\n"))
            .collect();
        return Response::text(200, &lines);
    }
    Response::text(404, "not found\n")
}

/// `/primary/<region>`: written here in the primary, else replayed there by the proxy.
fn write_in_primary(primary: &str) -> Response {
    if primary.is_empty() {
        return Response::text(400, "name the primary region\n");
    }
    let here = env_or("FLY_REGION", "unknown");
    if here == primary {
        return Response::text(200, &format!("written in {primary}\n"));
    }
    let mut response = Response::text(409, &format!("not the primary ({here}): replay\n"));
    response
        .headers
        .push(("fly-replay".to_owned(), format!("region={primary}")));
    response
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            exit_code: None,
            headers: Vec::new(),
        }
    }
}
