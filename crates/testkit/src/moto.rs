//! The moto S3-compatible server (`moto_server` from PyPI) on a free port, killed when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::{free_port, spawn_tool};

/// Credentials moto accepts (it accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";
/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// A running moto server.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    ///
    /// # Errors
    /// [`Error::Missing`] (naming the install script) when `moto_server` is not installed: an
    /// S3 test without its server fails rather than passing unrun.
    pub fn start() -> Result<Moto, Error> {
        let port = free_port()?;
        let child = spawn_tool(
            "moto_server",
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.exchange("GET", "/", false).is_ok() {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout("moto_server did not answer within 60 s".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), Error> {
        self.exchange("PUT", &format!("/{bucket}"), false).map(drop)
    }

    /// The keys in `bucket` under `prefix` (one listing page: up to 1,000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, Error> {
        let listing =
            self.exchange("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), true)?;
        Ok(listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect())
    }

    /// One bodiless HTTP/1.1 request that must answer 200; the response's head, or all of it
    /// with `body`.
    fn exchange(&self, method: &str, path: &str, body: bool) -> Result<String, Error> {
        let port = self.port;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let context = format!("{method} {path} on moto port {port}");
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(Error::io(&context))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(Error::io(&context))?;
        s.write_all(request.as_bytes()).map_err(Error::io(&context))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).map_err(Error::io(&context))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if !body && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let response = String::from_utf8_lossy(&buf).into_owned();
        if !response.starts_with("HTTP/1.1 200") {
            return Err(Error::Command {
                program: context,
                status: response.lines().next().unwrap_or_default().to_string(),
                stderr: response,
            });
        }
        Ok(response)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
