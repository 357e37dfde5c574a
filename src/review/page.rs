//! The page itself: the HTML, CSS and script embedded in the binary, a Content-Security-
//! Policy built from their hashes, and the records streamed in as JSON.
//!
//! The data sits in a `<script type="application/json">` block, which the browser never
//! runs; the script reads it with `JSON.parse` and builds the DOM with `textContent` only.
//! Inside the block every `<`, `>` and `&` is written as a `\u00XX` escape, so no file
//! name can close the block (`</script>`) or open a comment (`<!--`).

use std::io::{self, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::record::PageRecord;
use super::thumbnail::base64;

const HTML: &str = include_str!("assets/page.html");
const STYLE: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");
const DATA_MARK: &str = "{{DATA}}";

/// The policy: nothing may load but the page's own script and style (by hash), images
/// from the page's folder or `data:` URIs. `default-src 'none'` also forbids fetch, XHR,
/// WebSocket, fonts, frames and media, so the page cannot reach the network; inline event
/// handlers (`onerror=`) do not match the script hash and are refused. In Chromium a
/// `file://` page's `'self'` covers `file:` URLs, which is what lets the thumbnails (and the
/// originals in the detail view) load from disk.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
}

fn sha256_source(text: &str) -> String {
    format!("sha256-{}", base64(&Sha256::digest(text.as_bytes())))
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Passes JSON through, writing `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026`. Those
/// bytes only occur inside JSON strings, where the escapes mean the same characters.
struct ScriptSafe<W: Write>(W);

impl<W: Write> Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, &byte) in buf.iter().enumerate() {
            let escape: &[u8] = match byte {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(escape)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Writes one page: the head, then each record as it comes, then the labels and the tail.
pub struct PageWriter<W: Write> {
    out: ScriptSafe<W>,
    records: usize,
}

impl<W: Write> PageWriter<W> {
    /// Writes everything up to the first record. `kind` is `"classify"` or `"eval"`;
    /// `meta` is what the page shows above the grid.
    pub fn start<M: Serialize>(out: W, title: &str, kind: &str, meta: &M) -> io::Result<Self> {
        let (head, _) = split_template();
        let head = head
            .replace("{{CSP}}", &html_escape(&content_security_policy()))
            .replace("{{TITLE}}", &html_escape(title))
            .replace("{{STYLE}}", STYLE);
        let mut out = ScriptSafe(out);
        out.0.write_all(head.as_bytes())?;
        out.write_all(b"{\"kind\":")?;
        serde_json::to_writer(&mut out, kind)?;
        out.write_all(b",\"title\":")?;
        serde_json::to_writer(&mut out, title)?;
        out.write_all(b",\"meta\":")?;
        serde_json::to_writer(&mut out, meta)?;
        out.write_all(b",\"records\":[\n")?;
        Ok(Self { out, records: 0 })
    }

    /// Appends one record.
    pub fn record(&mut self, record: &PageRecord) -> io::Result<()> {
        if self.records > 0 {
            self.out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut self.out, record)?;
        self.records += 1;
        Ok(())
    }

    /// Closes the data with the label names and `root` (the absolute folder relative paths
    /// were resolved in, for exports), writes the script, and returns the writer.
    pub fn finish(mut self, labels: &[String], root: &str) -> io::Result<W> {
        self.out.write_all(b"],\n\"labels\":")?;
        serde_json::to_writer(&mut self.out, labels)?;
        self.out.write_all(b",\"root\":")?;
        serde_json::to_writer(&mut self.out, root)?;
        self.out.write_all(b"}")?;
        let (_, tail) = split_template();
        let tail = tail.replace("{{SCRIPT}}", SCRIPT);
        self.out.0.write_all(tail.as_bytes())?;
        self.out.flush()?;
        Ok(self.out.0)
    }
}

fn split_template() -> (&'static str, &'static str) {
    // The template is part of the binary and has the mark (a unit test checks it).
    HTML.split_once(DATA_MARK).unwrap_or((HTML, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_each_placeholder_once() {
        for mark in ["{{CSP}}", "{{TITLE}}", "{{STYLE}}", DATA_MARK, "{{SCRIPT}}"] {
            assert_eq!(HTML.matches(mark).count(), 1, "{mark}");
        }
        // A hash covers the exact text between the tags.
        assert!(HTML.contains("<script>{{SCRIPT}}</script>"));
        assert!(HTML.contains("<style>{{STYLE}}</style>"));
    }

    #[test]
    fn data_cannot_close_the_script_block() {
        let mut page = PageWriter::start(Vec::new(), "t</title>", "classify", &()).unwrap();
        let record = PageRecord::new("</script><!--<script>alert(1)</script>&amp;.jpg".into());
        page.record(&record).unwrap();
        let html = String::from_utf8(page.finish(&[], "/").unwrap()).unwrap();
        let data = html
            .split_once("id=\"vlm-data\">")
            .unwrap()
            .1
            .split_once("</script>")
            .unwrap()
            .0;
        assert!(!data.contains('<') && !data.contains('>') && !data.contains('&'));
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(value["records"][0]["path"], record.path);
        assert!(html.contains("<title>t&lt;/title&gt;</title>"));
        assert!(html.contains(&html_escape(&content_security_policy())));
    }
}
