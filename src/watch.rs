//! The watch folder: media files dropped into a configured directory are imported once for a
//! configured user (streamed into the blob store, then the same ingest path as an upload), and
//! then moved to `imported/` (refused ones to `failed/` with a `.reason.txt`) or marked with a
//! `.imported`/`.failed` file next to them.
//!
//! A file is taken only once its size and modification time are unchanged between two scans
//! and at least two seconds old, so a copy in progress is never imported half-way. Hidden
//! files, marker files and common partial-download names are ignored.
//!
//! Symbolic links are never followed: every file operation is made relative to a handle on the
//! folder with `O_NOFOLLOW` (`fstatat(AT_SYMLINK_NOFOLLOW)`, `renameat`, `mkdirat`), new files
//! (markers, reason notes) are created with `O_CREAT|O_EXCL`, and `imported/`/`failed/` must be
//! real directories. A symbolic link (or a FIFO, socket or device) dropped into the folder is
//! not imported: the link itself is moved to `failed/` (or marked `.failed`) with the reason.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppState, blocking};
use crate::blobs::PinnedBlob;
use crate::error::{Error, Result};
use crate::store::records::UploadOptions;
use sys::{
    Kind, create_new, exists_at, fstat, kind_of, lstat_at, mkdir_at, open_at, rename_noreplace,
    signature,
};

const IMPORTED_DIR: &str = "imported";
const FAILED_DIR: &str = "failed";
const IGNORED_SUFFIXES: &[&str] = &[
    ".imported",
    ".failed",
    ".part",
    ".partial",
    ".crdownload",
    ".tmp",
    ".reason.txt",
];
const MIN_AGE: Duration = Duration::from_secs(2);
const SYMLINK_REASON: &str = "symbolic links are not imported";
const NOT_REGULAR_REASON: &str = "only regular files are imported (not a FIFO, socket or device)";
/// How many numbered names (`1-NAME`, `2-NAME`, ...) are tried before giving up.
const MAX_NUMBERED: u32 = 100_000;

/// Starts the watcher when `watch.dir` is set.
pub fn spawn(state: AppState, shutdown: CancellationToken, tracker: &TaskTracker) {
    if state.config.watch.dir.is_empty() {
        return;
    }
    tracing::info!(dir = %state.config.watch.dir, user = %state.config.watch.user, "watching a folder for media");
    tracker.spawn(run(state, shutdown));
}

type Signature = (u64, SystemTime);

async fn run(state: AppState, shutdown: CancellationToken) {
    let dir = PathBuf::from(&state.config.watch.dir);
    let interval = Duration::from_secs(state.config.watch.interval_secs);
    let mark = state.config.watch.after == "mark";
    let mut pending: HashMap<OsString, Signature> = HashMap::new();
    // Warnings already logged (a blocked marker, a symlinked `imported/`), so that one problem
    // is logged once while it lasts rather than at every scan.
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        let scan_dir = dir.clone();
        match blocking(move || {
            let folder = Arc::new(Folder::open(&scan_dir)?);
            let found = scan(&folder, mark)?;
            Ok::<_, Error>((folder, found))
        })
        .await
        {
            Ok((folder, found)) => {
                for warning in &found.warnings {
                    if !warned.contains(warning) {
                        tracing::warn!(dir = %dir.display(), "{warning}");
                    }
                }
                warned = found.warnings.into_iter().collect();
                let mut still = HashMap::new();
                for (name, signature) in found.entries {
                    let old_enough = signature
                        .1
                        .elapsed()
                        .map(|age| age >= MIN_AGE)
                        .unwrap_or(false);
                    if pending.get(&name) == Some(&signature) && old_enough {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        import_one(&state, &folder, &name, mark).await;
                    } else {
                        still.insert(name, signature);
                    }
                }
                pending = still;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan the watch folder")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// An open handle on the watch folder; every operation on its entries goes through it.
struct Folder {
    path: PathBuf,
    fd: OwnedFd,
}

impl Folder {
    /// Opens the configured folder (the configured path itself may be a link the administrator
    /// set up; nothing inside it is followed).
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::internal("watch-io", format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            fd: file.into(),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `path/a/b` for log lines and error messages.
    fn show(&self, parts: &[&OsStr]) -> String {
        let mut path = self.path.clone();
        for part in parts {
            path.push(part);
        }
        path.display().to_string()
    }
}

/// What one scan found: entries to consider, and problems to log.
#[derive(Debug, Default)]
struct Scan {
    entries: Vec<(OsString, Signature)>,
    warnings: Vec<String>,
}

/// Visible, not-yet-handled entries in the folder with their size and modification time (of
/// the entry itself: a symbolic link is never followed). Directories are skipped; symbolic
/// links and other non-regular entries are listed so that they are refused and set aside.
fn scan(folder: &Folder, mark: bool) -> Result<Scan> {
    let mut out = Scan::default();
    if !mark {
        for dir in [IMPORTED_DIR, FAILED_DIR] {
            if let Some(problem) = target_dir_problem(folder, dir) {
                out.warnings.push(format!(
                    "{problem}; nothing in the watch folder is imported or moved until it is fixed"
                ));
                return Ok(out);
            }
        }
    }
    let entries = std::fs::read_dir(&folder.path)
        .map_err(|e| Error::internal("watch-io", format!("{}: {e}", folder.path.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_ignored(&name) {
            continue;
        }
        let Ok(stat) = lstat_at(folder.fd(), &name) else {
            continue;
        };
        if kind_of(&stat) == Kind::Dir {
            continue;
        }
        if mark {
            let imported = lstat_at(folder.fd(), &marker(&name, "imported")).ok();
            let failed = lstat_at(folder.fd(), &marker(&name, "failed")).ok();
            let is_link = |s: &Option<libc::stat>| s.as_ref().map(kind_of) == Some(Kind::Symlink);
            let handled = |s: &Option<libc::stat>| s.is_some() && !is_link(s);
            if handled(&imported) || handled(&failed) {
                continue;
            }
            if is_link(&failed) {
                out.warnings.push(format!(
                    "a symbolic link sits at `{}`; `{}` is left alone (no marker can be written safely)",
                    folder.show(&[&marker(&name, "failed")]),
                    folder.show(&[&name]),
                ));
                continue;
            }
        }
        out.entries.push((name, signature(&stat)));
    }
    out.entries.sort();
    out.warnings.sort();
    Ok(out)
}

fn is_ignored(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn marker(name: &OsStr, kind: &str) -> OsString {
    let mut marker = name.to_owned();
    marker.push(format!(".{kind}"));
    marker
}

/// Why `dir` (`imported` or `failed`) cannot be used, if it exists and is not a real directory.
fn target_dir_problem(folder: &Folder, dir: &str) -> Option<String> {
    let stat = lstat_at(folder.fd(), OsStr::new(dir)).ok()?;
    match kind_of(&stat) {
        Kind::Dir => None,
        Kind::Symlink => Some(format!(
            "`{}` is a symbolic link; refusing to move files into it",
            folder.show(&[OsStr::new(dir)])
        )),
        _ => Some(format!(
            "`{}` is not a directory; refusing to move files into it",
            folder.show(&[OsStr::new(dir)])
        )),
    }
}

async fn import_one(state: &AppState, folder: &Arc<Folder>, name: &OsStr, mark: bool) {
    let path = folder.show(&[name]);
    let outcome = import(state, folder, name, mark).await;
    let (kind, reason) = match &outcome {
        Ok(file_id) => {
            tracing::info!(%path, %file_id, "imported from the watch folder");
            ("imported", None)
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "watch folder import refused");
            ("failed", Some(e.message.clone()))
        }
    };
    let folder = folder.clone();
    let name = name.to_owned();
    let result = blocking(move || settle(&folder, &name, kind, reason.as_deref(), mark)).await;
    if let Err(e) = result {
        tracing::error!(%path, error = %e, "cannot move or mark a watch folder file; it may be imported again");
    }
}

/// Moves the entry to `imported/`/`failed/` (never overwriting: a numbered name is chosen),
/// or writes the marker file. Never follows a symbolic link: a link being refused is moved
/// itself, and a link at a marker's, a target's or a note's name is never written through.
fn settle(
    folder: &Folder,
    name: &OsStr,
    kind: &str,
    reason: Option<&str>,
    mark: bool,
) -> Result<()> {
    let io = |what: String| move |e: io::Error| Error::internal("watch-io", format!("{what}: {e}"));
    if mark {
        let marker = marker(name, kind);
        let shown = folder.show(&[&marker]);
        let mut file = create_new(folder.fd(), &marker).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists
                && lstat_at(folder.fd(), &marker).is_ok_and(|s| kind_of(&s) == Kind::Symlink)
            {
                Error::internal(
                    "watch-io",
                    format!(
                        "{shown}: a symbolic link sits at the marker's name; not writing through it"
                    ),
                )
            } else {
                io(shown.clone())(e)
            }
        })?;
        if let Some(reason) = reason {
            writeln!(file, "{reason}").map_err(io(shown))?;
        }
        return Ok(());
    }
    let dir_name = OsStr::new(if kind == "imported" {
        IMPORTED_DIR
    } else {
        FAILED_DIR
    });
    let dir = open_target_dir(folder, dir_name)?;
    let dir_shown = folder.show(&[dir_name]);
    let mut n = 0;
    let target = loop {
        let target = numbered(name, n);
        n += 1;
        if n > MAX_NUMBERED {
            return Err(Error::internal(
                "watch-io",
                format!("{dir_shown}: no free name for `{}`", name.to_string_lossy()),
            ));
        }
        if exists_at(dir.as_fd(), &target)
            || (reason.is_some() && exists_at(dir.as_fd(), &note_name(&target)))
        {
            continue;
        }
        match rename_noreplace(folder.fd(), name, dir.as_fd(), &target) {
            Ok(()) => break target,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(folder.show(&[name]))(e)),
        }
    };
    if let Some(reason) = reason {
        let note = note_name(&target);
        let shown = format!("{dir_shown}/{}", note.to_string_lossy());
        let mut file = create_new(dir.as_fd(), &note).map_err(io(shown.clone()))?;
        writeln!(file, "{reason}").map_err(io(shown))?;
    }
    Ok(())
}

/// `NAME` for 0, `n-NAME` after.
fn numbered(name: &OsStr, n: u32) -> OsString {
    if n == 0 {
        return name.to_owned();
    }
    let mut out = OsString::from(format!("{n}-"));
    out.push(name);
    out
}

fn note_name(target: &OsStr) -> OsString {
    let mut note = target.to_owned();
    note.push(".reason.txt");
    note
}

/// Opens (creating it if absent) `imported/` or `failed/`, which must be a real directory.
fn open_target_dir(folder: &Folder, dir: &OsStr) -> Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let shown = folder.show(&[dir]);
    let refuse = || {
        let problem = target_dir_problem(folder, &dir.to_string_lossy())
            .unwrap_or_else(|| format!("`{shown}` is not a usable directory"));
        Error::internal("watch-io", problem)
    };
    match open_at(folder.fd(), dir, flags, 0) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            match mkdir_at(folder.fd(), dir, 0o777) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::internal("watch-io", format!("{shown}: {e}"))),
            }
            open_at(folder.fd(), dir, flags, 0).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR) => refuse(),
                _ => Error::internal("watch-io", format!("{shown}: {e}")),
            })
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => Err(refuse()),
        Err(e) => Err(Error::internal("watch-io", format!("{shown}: {e}"))),
    }
}

/// Opens the entry without following a symbolic link, and only if it is a regular file.
fn open_source(folder: &Folder, name: &OsStr) -> Result<std::fs::File> {
    let refusal = |stat: &libc::stat| match kind_of(stat) {
        Kind::Symlink => Some(Error::new("unsupported-media", SYMLINK_REASON)),
        Kind::File => None,
        _ => Some(Error::new("unsupported-media", NOT_REGULAR_REASON)),
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused right after.
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match open_at(folder.fd(), name, flags, 0) {
        Ok(fd) => fd,
        Err(e) => {
            if let Some(refused) = lstat_at(folder.fd(), name).ok().as_ref().and_then(refusal) {
                return Err(refused);
            }
            return Err(Error::internal(
                "watch-io",
                format!("{}: {e}", folder.show(&[name])),
            ));
        }
    };
    let stat = fstat(&fd)
        .map_err(|e| Error::internal("watch-io", format!("{}: {e}", folder.show(&[name]))))?;
    if let Some(refused) = refusal(&stat) {
        return Err(refused);
    }
    Ok(std::fs::File::from(fd))
}

async fn import(
    state: &AppState,
    folder: &Arc<Folder>,
    name: &OsStr,
    mark: bool,
) -> Result<String> {
    let source_folder = folder.clone();
    let source_name = name.to_owned();
    let mut file = blocking(move || {
        let file = open_source(&source_folder, &source_name)?;
        let imported = marker(&source_name, "imported");
        let linked = lstat_at(source_folder.fd(), &imported)
            .is_ok_and(|stat| kind_of(&stat) == Kind::Symlink);
        if mark && linked {
            // Importing would mean writing the marker through the link.
            return Err(Error::new(
                "forbidden",
                format!(
                    "a symbolic link sits at `{}`; the file is not imported",
                    imported.to_string_lossy()
                ),
            ));
        }
        Ok(file)
    })
    .await?;
    let store = state.store.clone();
    let username = state.config.watch.user.clone();
    let owner = blocking(move || store.get_user_by_name(&username))
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            Error::new(
                "not-found",
                format!(
                    "watch.user `{}` is not an active user",
                    state.config.watch.user
                ),
            )
        })?;
    let blobs = state.blobs.clone();
    let limit = state.config.server.max_upload_bytes;
    let info: PinnedBlob = blocking(move || {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limit {
            return Err(Error::new(
                "payload-too-large",
                format!("file exceeds the upload limit of {limit} bytes"),
            ));
        }
        let mut writer = blobs
            .begin_write()
            .map_err(|e| Error::internal("blob-io", e))?;
        std::io::copy(&mut file, &mut writer).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::new("disk-full", "the server's disk is full")
            } else {
                Error::internal("blob-io", e)
            }
        })?;
        writer
            .finish_pinned()
            .map_err(|e| Error::internal("blob-io", e))
    })
    .await?;
    let filename = crate::services::ingest::sanitize_filename(&name.to_string_lossy());
    let options = UploadOptions {
        diarize: true,
        ..UploadOptions::default()
    };
    let upload = crate::services::ingest::StoredUpload::new(state, info);
    let record =
        crate::services::ingest::ingest(state, &owner.id, filename, upload, options).await?;
    Ok(record.id)
}

/// Thin wrappers over the `*at` system calls; nothing here follows a symbolic link unless the
/// caller asks (only the configured folder itself is opened by path).
mod sys {
    #![allow(unsafe_code)]

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        File,
        Dir,
        Symlink,
        Other,
    }

    pub(super) fn kind_of(stat: &libc::stat) -> Kind {
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    pub(super) fn signature(stat: &libc::stat) -> Signature {
        let modified = u64::try_from(stat.st_mtime)
            .ok()
            .map(|secs| {
                let nanos = u32::try_from(stat.st_mtime_nsec)
                    .unwrap_or(0)
                    .min(999_999_999);
                SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
            })
            .unwrap_or(SystemTime::UNIX_EPOCH);
        (u64::try_from(stat.st_size).unwrap_or(0), modified)
    }

    fn c_name(name: &OsStr) -> io::Result<CString> {
        CString::new(name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name contains a NUL byte"))
    }

    fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub(super) fn open_at(
        dir: BorrowedFd<'_>,
        name: &OsStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        let name = c_name(name)?;
        // SAFETY: `name` is a valid NUL-terminated string and `dir` an open descriptor.
        let fd = check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        })?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Creates a new file for writing; fails if anything (a symbolic link too) has the name.
    pub(super) fn create_new(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        open_at(dir, name, flags, 0o666).map(std::fs::File::from)
    }

    pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
        let name = c_name(name)?;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid string and descriptor; `stat` is written by the call when it succeeds.
        check(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                stat.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: the call succeeded, so `stat` is initialised.
        Ok(unsafe { stat.assume_init() })
    }

    /// Whether anything has the name, a dangling symbolic link included.
    pub(super) fn exists_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        lstat_at(dir, name).is_ok()
    }

    pub(super) fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is open; `stat` is written by the call when it succeeds.
        check(unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) })?;
        // SAFETY: the call succeeded, so `stat` is initialised.
        Ok(unsafe { stat.assume_init() })
    }

    pub(super) fn mkdir_at(
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: libc::mode_t,
    ) -> io::Result<()> {
        let name = c_name(name)?;
        // SAFETY: valid string and descriptor.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
    }

    /// Renames `from` (the entry itself, a symbolic link is never followed) to `to`, failing with
    /// `AlreadyExists` rather than replacing anything at `to`.
    pub(super) fn rename_noreplace(
        from_dir: BorrowedFd<'_>,
        from: &OsStr,
        to_dir: BorrowedFd<'_>,
        to: &OsStr,
    ) -> io::Result<()> {
        let from_c = c_name(from)?;
        let to_c = c_name(to)?;
        // SAFETY: valid strings and descriptors.
        let result = check(unsafe {
            libc::renameat2(
                from_dir.as_raw_fd(),
                from_c.as_ptr(),
                to_dir.as_raw_fd(),
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        });
        match result {
            Ok(_) => Ok(()),
            // A file system without RENAME_NOREPLACE: check, then rename (a narrow race that at
            // worst replaces an entry inside `imported/`/`failed/`, never anything outside).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                if exists_at(to_dir, to) {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                // SAFETY: valid strings and descriptors.
                check(unsafe {
                    libc::renameat(
                        from_dir.as_raw_fd(),
                        from_c.as_ptr(),
                        to_dir.as_raw_fd(),
                        to_c.as_ptr(),
                    )
                })
                .map(drop)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Setup {
        inbox: tempfile::TempDir,
        outside: tempfile::TempDir,
        folder: Folder,
    }

    fn setup() -> Setup {
        let inbox = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"precious").unwrap();
        let folder = Folder::open(inbox.path()).unwrap();
        Setup {
            inbox,
            outside,
            folder,
        }
    }

    impl Setup {
        fn at(&self, name: &str) -> PathBuf {
            self.inbox.path().join(name)
        }
        fn link(&self, name: &str, outside_name: &str) {
            symlink(self.outside.path().join(outside_name), self.at(name)).unwrap();
        }
        fn assert_outside_untouched(&self) {
            assert_eq!(
                std::fs::read(self.outside.path().join("victim")).unwrap(),
                b"precious"
            );
            assert_eq!(std::fs::read_dir(self.outside.path()).unwrap().count(), 1);
        }
    }

    fn names(scan: &Scan) -> Vec<String> {
        let names = scan.entries.iter().map(|(n, _)| n.to_string_lossy());
        names.map(|n| n.into_owned()).collect()
    }

    #[test]
    fn scan_lists_links_by_themselves_and_skips_dirs() {
        let s = setup();
        std::fs::write(s.at("a.wav"), b"1234").unwrap();
        s.link("link.wav", "victim");
        s.link("dangling.wav", "nothing");
        std::fs::create_dir(s.at("sub")).unwrap();
        std::fs::write(s.at(".hidden.wav"), b"x").unwrap();
        let scan = scan(&s.folder, false).unwrap();
        assert_eq!(names(&scan), ["a.wav", "dangling.wav", "link.wav"]);
        assert_eq!(scan.entries[0].1.0, 4);
        // The link's own size (its target's path), not the victim's.
        let target_len = s.outside.path().join("victim").as_os_str().len() as u64;
        assert_eq!(scan.entries[2].1.0, target_len);
        assert!(scan.warnings.is_empty());
    }

    #[test]
    fn scan_in_move_mode_stops_at_a_symlinked_target_dir() {
        let s = setup();
        std::fs::write(s.at("a.wav"), b"1234").unwrap();
        std::fs::create_dir(s.outside.path().join("dir")).unwrap();
        s.link("failed", "dir");
        let scan = scan(&s.folder, false).unwrap();
        assert!(scan.entries.is_empty());
        assert!(scan.warnings[0].contains("symbolic link"), "{scan:?}");
    }

    #[test]
    fn scan_in_mark_mode_skips_marked_and_warns_on_a_linked_failed_marker() {
        let s = setup();
        for name in ["a.wav", "b.wav", "c.wav", "d.wav"] {
            std::fs::write(s.at(name), b"1234").unwrap();
        }
        std::fs::write(s.at("a.wav.imported"), b"").unwrap();
        s.link("b.wav.failed", "nothing");
        s.link("c.wav.imported", "nothing");
        let scan = scan(&s.folder, true).unwrap();
        // c.wav is listed so that it is refused (its `.imported` is a link).
        assert_eq!(names(&scan), ["c.wav", "d.wav"]);
        assert_eq!(scan.warnings.len(), 1);
        assert!(scan.warnings[0].contains("b.wav.failed"), "{scan:?}");
    }

    #[test]
    fn open_source_refuses_links_and_fifos() {
        let s = setup();
        s.link("link.wav", "victim");
        let err = open_source(&s.folder, OsStr::new("link.wav")).unwrap_err();
        assert_eq!(err.message, SYMLINK_REASON);
        let fifo = CString::new(s.at("pipe.wav").as_os_str().as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a valid NUL-terminated path.
        let made = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let err = open_source(&s.folder, OsStr::new("pipe.wav")).unwrap_err();
        assert_eq!(err.message, NOT_REGULAR_REASON);
        std::fs::write(s.at("a.wav"), b"1234").unwrap();
        assert!(open_source(&s.folder, OsStr::new("a.wav")).is_ok());
    }

    #[test]
    fn settle_moves_a_link_itself_and_never_writes_through_links() {
        let s = setup();
        std::fs::create_dir(s.at("failed")).unwrap();
        s.link("failed/x.txt.reason.txt", "victim");
        s.link("failed/1-x.txt", "created");
        std::fs::write(s.at("x.txt"), b"data").unwrap();
        settle(&s.folder, OsStr::new("x.txt"), "failed", Some("why"), false).unwrap();
        assert_eq!(std::fs::read(s.at("failed/2-x.txt")).unwrap(), b"data");
        let note = std::fs::read_to_string(s.at("failed/2-x.txt.reason.txt")).unwrap();
        assert_eq!(note, "why\n");

        s.link("link.wav", "victim");
        let reason = Some(SYMLINK_REASON);
        settle(&s.folder, OsStr::new("link.wav"), "failed", reason, false).unwrap();
        let moved = std::fs::symlink_metadata(s.at("failed/link.wav")).unwrap();
        assert!(moved.file_type().is_symlink());
        s.assert_outside_untouched();
    }

    #[test]
    fn settle_refuses_a_symlinked_target_dir_and_marker() {
        let s = setup();
        std::fs::write(s.at("a.wav"), b"data").unwrap();
        s.link("imported", "made-dir");
        let err = settle(&s.folder, OsStr::new("a.wav"), "imported", None, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(s.at("a.wav").is_file());

        s.link("a.wav.failed", "victim");
        let err = settle(&s.folder, OsStr::new("a.wav"), "failed", Some("x"), true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        s.assert_outside_untouched();
    }
}
