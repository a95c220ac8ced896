//! Ctrl-C and SIGTERM during long repository work: the operation is cancelled through its token
//! and ends cleanly (a backup removes its staged files and writes no snapshot; every lock is
//! released), instead of the process dying mid-write. A second signal exits at once.

use std::io::Read;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

use holdfast_repository::progress::CancelToken;

/// Exit code of a command stopped by a signal (restic's and the shell's convention).
pub(super) const EXIT_INTERRUPTED: i32 = 130;

/// A token that SIGINT and SIGTERM cancel, from now on.
pub(crate) fn cancel_on_signal() -> CancelToken {
    let token = CancelToken::new();
    let cancel = token.clone();
    let (ready_tx, ready) = sync_channel::<bool>(1);
    let spawned = std::thread::Builder::new().name("holdfast-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            let _ = ready_tx.send(false);
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            let mut seen = false;
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "interrupt",
                    _ = term.recv() => "termination signal",
                };
                if seen {
                    eprintln!("holdfast: second {name}, exiting now");
                    std::process::exit(EXIT_INTERRUPTED);
                }
                seen = true;
                eprintln!("holdfast: {name} received, stopping cleanly (again to exit at once)");
                cancel.cancel();
            }
        });
    });
    // Wait until the handlers are installed, so a signal sent right after this returns is not
    // handled by the default action (death without cleanup).
    if spawned.is_ok() && !ready.recv().unwrap_or(false) {
        tracing::warn!("could not install signal handlers; Ctrl-C stops without cleanup");
    }
    token
}

/// Standard input read on a thread of its own, so a cancelled backup does not wait in `read`
/// for input that may never come.
pub(super) struct CancellableStdin {
    chunks: Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    cancel: CancelToken,
}

impl CancellableStdin {
    pub(super) fn new(cancel: CancelToken) -> Self {
        let (tx, chunks) = sync_channel(4);
        let _ = std::thread::Builder::new().name("holdfast-stdin".into()).spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Self { chunks, current: Vec::new(), pos: 0, cancel }
    }
}

impl Read for CancellableStdin {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            if self.cancel.is_cancelled() {
                // Not `Interrupted`: readers retry that kind.
                return Err(std::io::Error::other("cancelled"));
            }
            match self.chunks.recv_timeout(Duration::from_millis(100)) {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
