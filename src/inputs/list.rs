//! `--files-from`: a list of inputs, one per line or NUL-separated, read lazily.

use super::InputError;
use std::ffi::OsString;
use std::io::BufRead;

/// Reads entries from a path list one at a time, so a long list streams.
pub(crate) struct ListReader {
    reader: Box<dyn BufRead + Send>,
    /// `<stdin>` or the list's path, for messages.
    name: String,
    separator: u8,
    entry: usize,
}

impl ListReader {
    pub fn new(reader: Box<dyn BufRead + Send>, name: String, null_separated: bool) -> Self {
        ListReader {
            reader,
            name,
            separator: if null_separated { 0 } else { b'\n' },
            entry: 0,
        }
    }

    /// The next non-empty entry, `None` at the end. After an error the caller stops.
    pub fn next_entry(&mut self) -> Option<Result<OsString, InputError>> {
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(self.separator, &mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(InputError::ReadList {
                        list: self.name.clone(),
                        cause: source,
                    }))
                }
            }
            self.entry += 1;
            if buf.last() == Some(&self.separator) {
                buf.pop();
            }
            // Lists written on Windows end lines with CRLF; a file name ending in CR is
            // far rarer than such a list. NUL-separated lists are taken verbatim.
            if self.separator == b'\n' && buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.is_empty() {
                continue;
            }
            return Some(self.decode(buf));
        }
    }

    #[cfg(unix)]
    fn decode(&self, buf: Vec<u8>) -> Result<OsString, InputError> {
        // Unix file names are bytes; `find -print0` lists may hold non-UTF-8 names.
        use std::os::unix::ffi::OsStringExt;
        Ok(OsString::from_vec(buf))
    }

    #[cfg(not(unix))]
    fn decode(&self, buf: Vec<u8>) -> Result<OsString, InputError> {
        String::from_utf8(buf)
            .map(OsString::from)
            .map_err(|_| InputError::ListEntryNotUtf8 {
                list: self.name.clone(),
                line: self.entry,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(data: &'static [u8], null: bool) -> Vec<String> {
        let mut r = ListReader::new(Box::new(data), "<test>".into(), null);
        std::iter::from_fn(|| r.next_entry())
            .map(|e| e.unwrap().into_string().unwrap())
            .collect()
    }

    #[test]
    fn newline_separated_skips_blank_lines_and_crlf() {
        assert_eq!(
            entries(b"a.jpg\n\nsub dir/b c.png\r\nlast.gif", false),
            ["a.jpg", "sub dir/b c.png", "last.gif"]
        );
    }

    #[test]
    fn nul_separated_keeps_newlines_in_names() {
        assert_eq!(
            entries(b"a.jpg\0odd\nname.png\0\0tail\r\0", true),
            ["a.jpg", "odd\nname.png", "tail\r"]
        );
    }

    #[test]
    fn empty_list_has_no_entries() {
        assert!(entries(b"", false).is_empty());
        assert!(entries(b"\n\n", false).is_empty());
    }
}
