//! Where log lines go: an in-memory buffer that a thread of its own writes to stdout at least
//! every [`FLUSH_EVERY`] (sooner when [`FLUSH_AT`] bytes wait), so a busy proxy makes one write
//! per batch instead of one per line. Nothing is dropped: a call that finds [`MAX_BUFFERED`]
//! bytes waiting waits for the writer. [`flush`] empties it (at shutdown); a `kill -9` loses
//! at most what arrived since the last write.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Waiting bytes that make the writer go at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes beyond which a new line waits for the writer.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// A buffer in front of a writer (stdout in production), shared by every thread that logs.
#[derive(Clone)]
pub struct Buffered {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Signalled when bytes wait (or on close); the writer thread waits on it.
    filled: Condvar,
    /// Signalled when the writer took the bytes; full-buffer callers wait on it.
    drained: Condvar,
    /// The destination; held while writing, so batches stay in order.
    out: Mutex<Out>,
}

struct Out {
    writer: Box<dyn Write + Send>,
    /// The last batch's buffer, emptied, to be the next one (no allocation per batch).
    spare: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Buffered {
    /// A buffer in front of `out`, with its writer thread.
    pub fn new(out: Box<dyn Write + Send>) -> Buffered {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            filled: Condvar::new(),
            drained: Condvar::new(),
            out: Mutex::new(Out {
                writer: out,
                spare: Vec::with_capacity(FLUSH_AT),
            }),
        });
        let writer = Arc::downgrade(&shared);
        let _ = std::thread::Builder::new()
            .name("bcproxy-log".into())
            .spawn(move || {
                while let Some(shared) = writer.upgrade() {
                    shared.write_when_due();
                }
            });
        Buffered { shared }
    }

    /// Writes everything waiting, now.
    pub fn flush(&self) {
        self.shared.write_pending();
    }
}

impl Shared {
    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        while pending.len() >= MAX_BUFFERED {
            self.filled.notify_one();
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        if was_empty || pending.len() >= FLUSH_AT {
            self.filled.notify_one();
        }
    }

    /// Waits for a first line, then until the batch is due (full enough, or its first line
    /// old enough), then writes it.
    fn write_when_due(&self) {
        {
            let pending = lock(&self.pending);
            let pending = self
                .filled
                .wait_while(pending, |p| p.is_empty())
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = self
                .filled
                .wait_timeout_while(pending, FLUSH_EVERY, |p| p.len() < FLUSH_AT)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        self.write_pending();
    }

    fn write_pending(&self) {
        let mut out = lock(&self.out);
        let spare = std::mem::take(&mut out.spare);
        let mut batch = std::mem::replace(&mut *lock(&self.pending), spare);
        self.drained.notify_all();
        if !batch.is_empty() {
            // A log that cannot be written has nowhere to report it.
            let _ = out.writer.write_all(&batch);
            let _ = out.writer.flush();
        }
        batch.clear();
        if batch.capacity() > MAX_BUFFERED {
            // A burst grew it: give the memory back.
            batch = Vec::with_capacity(FLUSH_AT);
        }
        out.spare = batch;
    }
}

/// One line on its way into the buffer.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.shared)
    }
}

/// The process's stdout, buffered (made on first use).
pub fn stdout() -> &'static Buffered {
    static STDOUT: OnceLock<Buffered> = OnceLock::new();
    STDOUT.get_or_init(|| Buffered::new(Box::new(std::io::stdout())))
}

/// Writes every buffered line to stdout now (at shutdown, and before exiting).
pub fn flush() {
    stdout().flush();
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A writer into memory, for tests of what is written.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_flush_interval_and_on_flush() {
        let sink = Sink::default();
        let buffered = Buffered::new(Box::new(sink.clone()));
        Line(&buffered.shared).write_all(b"one\n").unwrap();
        Line(&buffered.shared).write_all(b"two\n").unwrap();
        let deadline = std::time::Instant::now() + 10 * FLUSH_EVERY;
        while sink.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            &*sink.0.lock().unwrap(),
            b"one\ntwo\n",
            "not written by the timer"
        );
        Line(&buffered.shared).write_all(b"three\n").unwrap();
        buffered.flush();
        assert_eq!(&*sink.0.lock().unwrap(), b"one\ntwo\nthree\n");
    }

    #[test]
    fn a_full_buffer_makes_callers_wait_and_nothing_is_lost() {
        let sink = Sink::default();
        let buffered = Buffered::new(Box::new(sink.clone()));
        let line = vec![b'x'; 1023];
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = buffered.clone();
                let line = line.clone();
                std::thread::spawn(move || {
                    let mut whole = line.clone();
                    whole.push(b'\n');
                    for _ in 0..3000 {
                        Line(&b.shared).write_all(&whole).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        buffered.flush();
        let out = sink.0.lock().unwrap();
        assert_eq!(out.len(), 4 * 3000 * 1024, "lines were lost");
        assert!(
            out.split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == 1023)
        );
    }
}
