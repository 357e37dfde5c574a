//! Finishing a pack file after the answer: the copy of the entries and the sync (about
//! 1 s for B/32's 600 MB on a disk writing 800 MB/s, most of it the sync) handed to a
//! detached process, so a first run exits as soon as one with `--no-pack-cache`.
//!
//! The process finishing a file renames its temporary to `<temporary>.sync` first, keeps
//! the lock on it (the descriptor is inherited), writes the entries, syncs, renames it into place and syncs the directory; a failure removes it. A
//! load that finds no pack file but a locked `.sync` temporary of the same slot waits for
//! it ([`FINISH_WAIT`] at most) instead of packing again.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{unlocked, WriteJob};

/// Whether a dropped pack writer hands what is left to a detached process.
static DETACHED: AtomicBool = AtomicBool::new(false);

/// The most a load waits for another process to finish the pack file it needs: a sync of
/// 1.7 GB (L/14) on a disk writing 100 MB/s.
pub(super) const FINISH_WAIT: Duration = Duration::from_secs(20);

/// The suffix of a temporary that only needs its last entries, a sync and a rename.
const SYNCING: &str = ".sync";

/// Makes pack files started from now on be written, once their model is dropped, by a
/// detached process instead of during the run and at the drop (Unix; elsewhere, and where
/// that process cannot be started, the drop writes them as before). For a program that
/// exits right after dropping its model, as the `vlm` binary does: its exit then waits for
/// neither the copy nor the sync. Off by default, so a library user's drop returns with the
/// file in place.
pub fn finish_pack_files_detached(on: bool) {
    DETACHED.store(on, Ordering::Relaxed);
}

pub(super) fn detached() -> bool {
    cfg!(unix) && DETACHED.load(Ordering::Relaxed)
}

fn syncing_name(tmp: &Path) -> PathBuf {
    let mut name = tmp.as_os_str().to_owned();
    name.push(SYNCING);
    PathBuf::from(name)
}

/// Whether `name` is a temporary pack file being finished by a detached process.
pub(super) fn is_syncing(name: &str) -> bool {
    name.ends_with(SYNCING)
}

/// Waits while a live process finishes the pack file `path`; true when it may now exist.
pub(super) fn wait_for_finisher(path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    let prefix = format!("{name}.tmp.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let finishing: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && is_syncing(n))
        })
        .map(|e| e.path())
        // A temporary nobody holds is a dead finisher's: the sweep removes it.
        .filter(|p| std::fs::File::open(p).is_ok_and(|f| !unlocked(&f)))
        .collect();
    if finishing.is_empty() {
        return false;
    }
    let deadline = Instant::now() + FINISH_WAIT;
    while Instant::now() < deadline {
        if path.exists() || finishing.iter().all(|p| !p.exists()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Hands every entry of `job` (none is written yet), the sync and the rename to a detached
/// process. On an error nothing was handed over: the temporary keeps its name and the
/// caller writes it.
#[cfg(unix)]
pub(super) fn detach(job: &WriteJob) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    // Everything the detached process needs is made here: the child of a threaded process
    // may only make async-signal-safe calls (no allocation, no locks) until it exits.
    let mut writes = Vec::with_capacity(job.parts.len());
    for (offset, bytes) in &job.parts {
        let (at, len) = bytes.with_bytes(|b| (b.as_ptr() as usize, b.len()))?;
        writes.push(Write {
            at,
            len,
            offset: *offset as u64,
        });
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let syncing = syncing_name(&job.tmp);
    let names = Names {
        tmp: c(&syncing)?,
        path: c(&job.path)?,
        dir: c(&job.dir)?,
    };
    std::fs::rename(&job.tmp, &syncing)?;
    let fd = job.file.as_raw_fd();
    // SAFETY: the child runs only `finish_in_child`, which makes async-signal-safe calls on
    // memory made before the fork (`writes`, `names`, the entries' values, which nothing in
    // the child frees) and exits with `_exit`; the parent only waits for it.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above. The middle process exits at once so that the finisher is
        // orphaned and reaped by init, never left a zombie of a process that lives on.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => finish_in_child(fd, &writes, &names),
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
        }
    }
    let handed_over = child > 0 && {
        let mut status = 0;
        // SAFETY: waits for the child made above; writes only `status`.
        let waited = loop {
            let r = unsafe { libc::waitpid(child, &mut status, 0) };
            if r != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break r;
            }
        };
        waited == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    };
    if handed_over {
        Ok(())
    } else {
        let cause = std::io::Error::other("cannot start a process to finish the pack file");
        std::fs::rename(&syncing, &job.tmp)?;
        Err(cause)
    }
}

#[cfg(not(unix))]
pub(super) fn detach(_job: &WriteJob) -> std::io::Result<()> {
    Err(std::io::Error::other("not on this platform"))
}

/// One entry's values to write: `len` bytes at address `at`, to byte `offset`.
struct Write {
    at: usize,
    len: usize,
    offset: u64,
}

struct Names {
    tmp: CString,
    path: CString,
    dir: CString,
}

/// The detached process: writes, syncs, renames, syncs the directory, exits.
///
/// # Safety
/// Only in a child just forked, with `writes` pointing into memory valid in it.
#[cfg(unix)]
unsafe fn finish_in_child(fd: i32, writes: &[Write], names: &Names) -> ! {
    // The answer is out: whoever reads this process's output sees its end now. Every other
    // descriptor but the file's goes too (pipes, sockets the run held).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let open = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
        0 => limit.rlim_cur.min(65_536) as i32,
        _ => 1024,
    };
    for other in (0..open).filter(|&d| d != fd) {
        libc::close(other);
    }
    libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    let ok = writes.iter().all(|w| write_at(fd, w)) && libc::fsync(fd) == 0;
    let renamed = ok && libc::rename(names.tmp.as_ptr(), names.path.as_ptr()) == 0;
    if renamed {
        let dir = libc::open(names.dir.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if dir >= 0 {
            libc::fsync(dir);
            libc::close(dir);
        }
    } else {
        libc::unlink(names.tmp.as_ptr());
    }
    libc::_exit(if renamed { 0 } else { 1 })
}

/// `pwrite` until all of `w` is written; false on an error.
#[cfg(unix)]
unsafe fn write_at(fd: i32, w: &Write) -> bool {
    let mut done = 0usize;
    while done < w.len {
        let n = libc::pwrite(
            fd,
            (w.at + done) as *const libc::c_void,
            w.len - done,
            (w.offset + done as u64) as libc::off_t,
        );
        if n > 0 {
            done += n as usize;
        } else if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
    true
}
