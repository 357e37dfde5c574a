//! `vlm dedup`: near-duplicate groups by embedding similarity ([`vlm::dedup`]); writes the
//! groups, optionally a review page and group folders of links. Never moves or deletes.

use std::time::Instant;

use anyhow::Context;

use super::{find_inputs, output_format, write_failed, Printer, Session};
use super::{EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
use crate::cli::DedupArgs;
use vlm::dedup::{self, UnitRows};
use vlm::inputs::Source;
use vlm::organize::Organizer;
use vlm::output::Format;
use vlm::review::{self, DuplicatesMeta, ReportOptions};

pub fn run(args: &DedupArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
    let format = output_format(args.format.map(Format::from), args.output.as_deref())?;
    if matches!(format, Format::Csv | Format::Tsv) {
        anyhow::bail!("vlm dedup writes table, json or jsonl; name the output .jsonl or .json, or pass --format");
    }
    if !(-1.0..=1.0).contains(&args.threshold) {
        return Err(dedup::DedupError::Threshold(args.threshold).into());
    }
    let mut organizer = match (args.organize, &args.dest) {
        (Some(mode), Some(dest)) => Some(Organizer::new(dest, mode.into(), args.dry_run)?),
        _ => None,
    };
    let found = find_inputs(&args.inputs, &args.filter, &printer)?;
    let mut failed = found.failed;
    let session = Session::open(&args.model, printer)?;
    let mut names = Vec::new();
    let mut files = Vec::new();
    let mut embeddings = Vec::new();
    let stats = session.embed(found.inputs, "images", |_, batch| {
        for done in batch {
            match done.embedding {
                Ok(embedding) => {
                    names.push(done.input.display);
                    files.push(done.input.source);
                    embeddings.push(embedding);
                }
                Err(_) => failed += 1,
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let printer = &session.printer;
    if stats.cancelled {
        printer.error("interrupted: no groups were written");
        return Ok(EXIT_INTERRUPTED);
    }
    let searching = Instant::now();
    let rows = UnitRows::new(&embeddings)?;
    drop(embeddings);
    let (pairs, method) = dedup::find_pairs(&rows, args.threshold, args.search.into())?;
    let groups = dedup::groups(&rows, &pairs);
    printer.detail(format_args!(
        "{} pairs at or above {} among {} images, by {method} in {:.2} s",
        pairs.len(),
        args.threshold,
        rows.len(),
        searching.elapsed().as_secs_f64()
    ));
    let records = dedup::records(&groups, &names);
    write_groups(args, format, &records)?;
    if let Some(page) = &args.report {
        let here = std::env::current_dir()
            .context("cannot read the current folder; run vlm dedup from a folder that exists")?;
        let mut options = ReportOptions::new(page.clone(), vec![here]);
        options.title = "vlm dedup".to_string();
        let meta = DuplicatesMeta {
            threshold: args.threshold,
            method: method.to_string(),
            images: rows.len(),
        };
        let summary = review::write_duplicates_report(&records, &meta, &options)?;
        printer.note(format_args!(
            "wrote {}: {} images in {} groups, {} thumbnails",
            page.display(),
            summary.records,
            records.len(),
            summary.thumbnails
        ));
    }
    if let Some(organizer) = &mut organizer {
        for (number, group) in groups.iter().enumerate() {
            let folder = format!("group-{:04}", number + 1);
            for &(index, _) in &group.members {
                let Source::File(path) = &files[index] else {
                    printer.error(format_args!(
                        "{}: not organized: only local files can be linked",
                        names[index]
                    ));
                    continue;
                };
                match organizer.place(path, Some(&folder)) {
                    Ok(placement) if args.dry_run || printer.verbose() => printer.plain(placement),
                    Ok(_) => {}
                    Err(err) => {
                        failed += 1;
                        printer.error(err);
                    }
                }
            }
        }
    }
    let grouped: usize = groups.iter().map(|g| g.members.len()).sum();
    printer.note(format_args!(
        "{} groups of near-duplicates ({grouped} of {} images); failed {failed}, skipped {} in {:.1} s",
        groups.len(),
        rows.len(),
        found.skipped,
        started.elapsed().as_secs_f64()
    ));
    session.report(&stats);
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

fn write_groups(
    args: &DedupArgs,
    format: Format,
    records: &[dedup::GroupRecord<'_>],
) -> anyhow::Result<()> {
    let (out, out_name) = super::output_writer(args.output.as_deref())?;
    dedup::write_groups(out, format, records).with_context(|| write_failed(&out_name))?;
    Ok(())
}
