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
            if moto.request("GET", "/").map(|r| r.starts_with("HTTP/1.1 200")).unwrap_or(false) {
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
        let response = self.request("PUT", &format!("/{bucket}"))?;
        if !response.starts_with("HTTP/1.1 200") {
            return Err(Error::Command {
                program: format!("PUT /{bucket} on moto"),
                status: response.lines().next().unwrap_or_default().to_string(),
                stderr: response,
            });
        }
        Ok(())
    }

    /// One bodiless HTTP/1.1 request; the response head.
    fn request(&self, method: &str, path: &str) -> Result<String, Error> {
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
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
