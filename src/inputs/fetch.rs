//! Reading an input's bytes: a local file, or an http(s) URL.

use super::{InputError, Source};
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: u32 = 5;

/// Reads an input's bytes: a file, or an http(s) URL with a size cap and timeout.
///
/// Files and responses larger than `max_bytes` are refused without being read in full.
/// URLs follow up to 5 redirects, give up after 10 s connecting or 30 s without data,
/// honour the `http_proxy`/`https_proxy`/`all_proxy` environment, and fail on any
/// non-2xx final status.
pub fn read_bytes(source: &Source, max_bytes: u64) -> Result<Vec<u8>, InputError> {
    match source {
        Source::File(path) => read_file(path, max_bytes),
        Source::Url(url) => read_url(url, max_bytes),
    }
}

fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    // Checked before opening (opening a device can act on it) and again on what was
    // opened, in case the path changed in between.
    refuse_devices(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = std::fs::File::open(path).map_err(io)?;
    refuse_devices(path, &file.metadata().map_err(io)?)?;
    // The length is only a hint (the file may grow, or be a pipe), so the read is capped too.
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    if hint > max_bytes {
        return Err(too_large(path.display().to_string(), max_bytes));
    }
    read_capped(file, hint, max_bytes)
        .map_err(io)?
        .ok_or_else(|| too_large(path.display().to_string(), max_bytes))
}

/// Refuses what is neither a regular file, nor a FIFO (`<(...)`), nor standard input: a
/// device like /dev/zero would be read up to the size cap before being refused, and a
/// socket or a terminal may never end.
fn refuse_devices(path: &Path, meta: &std::fs::Metadata) -> Result<(), InputError> {
    let kind = meta.file_type();
    if kind.is_file() || is_stdin(path) {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_fifo() {
            return Ok(());
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        Err(InputError::NotAFile {
            path: path.to_path_buf(),
            kind: what,
        })
    }
    #[cfg(not(unix))]
    Err(InputError::NotAFile {
        path: path.to_path_buf(),
        kind: if kind.is_dir() {
            "a directory"
        } else {
            "not a file"
        },
    })
}

/// Whether `path` names this process's standard input, which is read whatever it is.
fn is_stdin(path: &Path) -> bool {
    ["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"]
        .iter()
        .any(|name| path == Path::new(name))
}

fn read_url(url: &str, max_bytes: u64) -> Result<Vec<u8>, InputError> {
    let network = |message: String| InputError::Network {
        url: url.to_string(),
        message,
    };
    let response = match agent().get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, _)) => {
            return Err(InputError::HttpStatus {
                url: url.to_string(),
                status,
            })
        }
        Err(ureq::Error::Transport(t)) => return Err(network(transport_message(&t))),
    };
    let status = response.status();
    // ureq hands back 1xx/3xx as Ok (e.g. a redirect past the limit); those are no image.
    if !(200..300).contains(&status) {
        return Err(InputError::HttpStatus {
            url: url.to_string(),
            status,
        });
    }
    let declared = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes) {
        return Err(too_large(url.to_string(), max_bytes));
    }
    read_capped(response.into_reader(), declared.unwrap_or(0), max_bytes)
        .map_err(|e| network(format!("reading the response failed: {e}")))?
        .ok_or_else(|| too_large(url.to_string(), max_bytes))
}

/// Reads at most `max_bytes`; `None` when there was more.
fn read_capped(reader: impl Read, hint: u64, max_bytes: u64) -> std::io::Result<Option<Vec<u8>>> {
    // One byte past the cap tells "exactly at the cap" from "over it".
    let mut buf = Vec::with_capacity(hint.min(max_bytes) as usize);
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max_bytes).then_some(buf))
}

fn too_large(display: String, limit: u64) -> InputError {
    InputError::TooLarge { display, limit }
}

/// One agent for the process, so requests to the same host reuse connections.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .redirects(MAX_REDIRECTS)
            .try_proxy_from_env(true)
            .user_agent(concat!("vlm/", env!("CARGO_PKG_VERSION")))
            .build()
    })
}

fn transport_message(t: &ureq::Transport) -> String {
    match t.kind() {
        // Without ureq's `tls` feature https is an unknown scheme; say so plainly.
        ureq::ErrorKind::UnknownScheme if t.url().is_some_and(|u| u.scheme() == "https") => {
            "this build of vlm cannot fetch https URLs (no TLS support)".to_string()
        }
        _ => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, b"12345").unwrap();
        let source = Source::File(path.clone());
        assert_eq!(read_bytes(&source, 5).unwrap(), b"12345");
        let err = read_bytes(&source, 4).unwrap_err();
        assert!(
            matches!(err, InputError::TooLarge { limit: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("a.bin"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.jpg");
        let err = read_bytes(&Source::File(path), 100).unwrap_err();
        assert!(matches!(err, InputError::Io { .. }));
        assert!(err.to_string().contains("gone.jpg"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_are_refused_before_reading_and_fifos_read() {
        let err = read_bytes(&Source::File("/dev/zero".into()), 1 << 30).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::NotAFile {
                    kind: "a character device",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path; it changes no memory.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, b"through a pipe").unwrap())
        };
        assert_eq!(
            read_bytes(&Source::File(fifo), 100).unwrap(),
            b"through a pipe"
        );
        writer.join().unwrap();
    }

    #[test]
    fn capped_read_tells_at_cap_from_over() {
        assert_eq!(
            read_capped(&b"abc"[..], 0, 3).unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(read_capped(&b"abcd"[..], 0, 3).unwrap(), None);
        assert_eq!(read_capped(&b""[..], 0, 0).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn unreachable_url_is_a_network_error_naming_it() {
        // A port just released by the OS has nothing listening; connect is refused fast.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/a.jpg");
        let err = read_bytes(&Source::Url(url.clone()), 100).unwrap_err();
        assert!(matches!(err, InputError::Network { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
    }
}
