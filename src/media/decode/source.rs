//! The tracked media source: counts the bytes a demuxer reads (to stop one that circles),
//! records failures of the source itself, and offers an unseekable view for the probe retry.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use symphonia::core::io::MediaSource;
/// Bytes a reader may pull in, as a multiple of the file's length (plus a fixed allowance for
/// small files): demuxers seek back and re-read a little, but a corrupt index that sends them
/// round in circles is cut off here.
const MAX_READ_FACTOR: u64 = 8;
const READ_ALLOWANCE: u64 = 64 << 20;

/// Counts what the demuxer reads and remembers errors of the source itself, so that a stuck
/// or circling reader can be stopped and a failing disk is told apart from a corrupt file.
pub(super) struct Progress {
    bytes_read: AtomicU64,
    budget: u64,
    source_failed: AtomicBool,
    source_error: std::sync::Mutex<Option<std::io::Error>>,
}

impl Progress {
    pub(super) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub(super) fn over_budget(&self) -> bool {
        self.bytes_read() > self.budget
    }

    pub(super) fn take_source_error(&self) -> Option<std::io::Error> {
        if !self.source_failed.load(Ordering::Relaxed) {
            return None;
        }
        self.source_error.lock().ok().and_then(|mut e| e.take())
    }
}

/// The caller's source, shared so that a failed probe can start over from byte 0.
type SharedSource = Arc<std::sync::Mutex<Box<dyn MediaSource>>>;

pub(super) struct TrackedSource {
    inner: SharedSource,
    /// Whether to let the demuxer seek. See [`probe`] for why it is sometimes withheld.
    pub(super) seekable: bool,
    byte_len: Option<u64>,
    pub(super) progress: Arc<Progress>,
}

impl TrackedSource {
    pub(super) fn new(inner: Box<dyn MediaSource>) -> Self {
        let byte_len = inner.byte_len();
        let seekable = inner.is_seekable();
        // A source without a known length (a pipe) gets no budget: nothing to measure against.
        let budget = byte_len.map_or(u64::MAX, |len| {
            len.saturating_mul(MAX_READ_FACTOR)
                .saturating_add(READ_ALLOWANCE)
        });
        Self {
            inner: Arc::new(std::sync::Mutex::new(inner)),
            seekable,
            byte_len,
            progress: Arc::new(Progress {
                bytes_read: AtomicU64::new(0),
                budget,
                source_failed: AtomicBool::new(false),
                source_error: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A second view of the same source that offers neither seeking nor its length.
    pub(super) fn unseekable_view(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            seekable: false,
            byte_len: None,
            progress: self.progress.clone(),
        }
    }

    pub(super) fn rewind(&self) -> std::io::Result<()> {
        self.lock()?.seek(SeekFrom::Start(0)).map(|_| ())
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, Box<dyn MediaSource>>> {
        // Poisoned only if a previous read panicked inside the source; refuse to go on.
        self.inner
            .lock()
            .map_err(|_| std::io::Error::other("media source failed earlier"))
    }

    fn record<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            // EOF is how truncation shows; only real failures of the source are I/O errors.
            if e.kind() != std::io::ErrorKind::UnexpectedEof
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                self.progress.source_failed.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = self.progress.source_error.lock() {
                    slot.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
                }
            }
        }
        result
    }
}

impl Read for TrackedSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.progress.over_budget() {
            // Starve a reader that circles through the file: it sees EOF and stops.
            return Ok(0);
        }
        let result = self.lock().and_then(|mut inner| inner.read(buf));
        if let Ok(n) = &result {
            self.progress
                .bytes_read
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        self.record(result)
    }
}

impl Seek for TrackedSource {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        // Not recorded as a source failure: a seek fails only for an impossible target, which
        // a demuxer computes from corrupt data.
        self.lock()?.seek(pos)
    }
}

impl MediaSource for TrackedSource {
    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn byte_len(&self) -> Option<u64> {
        self.byte_len
    }
}
