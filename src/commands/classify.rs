//! `vlm classify`: rank labels for each image, write reports, optionally sort the files.
//! Labels are scored by their prompts, by prompts and example images (`--examples`), or by
//! a linear probe (`--probe`); [`vlm::decide`] chooses what to report.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use super::database::LabelStore;
use super::{
    find_inputs, output_format, stream_inputs, warn_truncated, write_failed, Found, Printer,
    Session, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED,
};
use crate::cli::ClassifyArgs;
use vlm::decide::{self, Decisions, Scorer};
use vlm::embedder::Embedded;
use vlm::fewshot::{self, NotTuned, ParamsChoice, TipAdapterCache, TipParams};
use vlm::inputs::{Input, Source};
use vlm::labels::{self, PromptSet, PromptSpec};
use vlm::organize::Organizer;
use vlm::output::{self, Format, ImageResult, Outcome, ResultWriter};
use vlm::pipeline::PipelineStats;
use vlm::probe::{ModelIdentity, Probe};
use vlm::xmp::{self, SidecarWriter, XmpOptions};
use vlm::{Checkpoint, PromptEmbeddings};

/// Counters for the summary line.
#[derive(Default)]
struct Tally {
    labelled: usize,
    failed: usize,
    skipped: usize,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let printer = Printer::new(args.quiet, args.verbose);
    let settings = Settings::resolve(args)?;
    let address = args
        .to
        .as_deref()
        .map(|to| super::database::address(to, args.table.as_deref()))
        .transpose()?;
    // `--files-from -` streams: each line is labelled while stdin stays open, for a
    // long-lived worker fed by Spark or Ray.
    let streaming = args.filter.files_from.as_deref() == Some(Path::new("-"));
    let found = if streaming {
        Found::default()
    } else {
        find_inputs(&args.inputs, &args.filter, &printer)?
    };
    let done = already_done(args, &printer)?;
    let session = Session::open(&args.model, printer)?;
    // Opened before labelling, so that a table of another model is refused before any work.
    let store = address
        .as_ref()
        .map(|address| LabelStore::open(address, &session))
        .transpose()?;
    let Some(scorer) = scorer(args, &session, settings.source)? else {
        return Ok(EXIT_INTERRUPTED);
    };
    // The threshold applies to the probability or the cosine: the model's scoring decides.
    let decisions = settings.decisions.with_threshold_on(
        args.threshold,
        scorer.thresholds_probability(session.classifier()),
    )?;
    let organizer = match (args.organize, &args.dest) {
        (Some(mode), Some(dest)) => Some(Organizer::new(dest, mode.into(), args.dry_run)?),
        _ => None,
    };
    let sidecars = settings
        .xmp
        .map(|options| SidecarWriter::new(options, args.dry_run));
    let (writer, out_name) = open_writer(args, settings.format, &scorer)?;
    let mut writer = writer.with_scoring(scorer.scoring_name(session.classifier()));
    for (path, message) in found.unreadable {
        writer
            .write(&failed_report(path, message))
            .with_context(|| write_failed(&out_name))?;
    }
    let mut tally = Tally {
        failed: found.failed,
        skipped: found.skipped,
        ..Tally::default()
    };
    let mut sink = Sink {
        args,
        scorer: &scorer,
        decisions,
        organizer,
        sidecars,
        writer,
        tally: &mut tally,
        out_name: &out_name,
        store,
    };
    let write = |printer: &Printer, batch| sink.write(printer, session.classifier(), batch);
    let stream_failed = Arc::new(AtomicUsize::new(0));
    let stats = if streaming {
        let failed = Arc::clone(&stream_failed);
        let inputs = stream_inputs(&args.inputs, &args.filter, &session.printer, failed)?
            .filter(|i| !done.contains(&i.display));
        session.embed_stream(inputs, None, "images", write)?
    } else {
        let todo: Vec<Input> = found
            .inputs
            .into_iter()
            .filter(|i| !done.contains(&i.display))
            .collect();
        let len = todo.len();
        session.embed_stream(todo.into_iter(), Some(len), "images", write)?
    };
    let Sink { writer, .. } = sink;
    writer.finish().with_context(|| write_failed(&out_name))?;
    tally.failed += stream_failed.load(Ordering::Relaxed);
    Ok(summary(args, &session, &tally, &stats, started, &out_name))
}

/// The flags that need checking, resolved once before anything is loaded.
struct Settings {
    source: LabelSource,
    format: Format,
    decisions: Decisions,
    /// `--write-xmp`: how sidecars are named and the root of vlm's keywords.
    xmp: Option<XmpOptions>,
}

impl Settings {
    fn resolve(args: &ClassifyArgs) -> anyhow::Result<Self> {
        let source = match &args.probe {
            Some(path) => LabelSource::Probe(Probe::load(path)?),
            None => LabelSource::Prompts(prompt_set(args)?),
        };
        // Checked before the model loads; the values used are settled with the examples.
        TipParams::new(
            args.examples_weight.unwrap_or(fewshot::DEFAULT_WEIGHT),
            args.examples_sharpness
                .unwrap_or(fewshot::DEFAULT_SHARPNESS),
        )?;
        let format = output_format(args.format.map(Format::from), args.output.as_deref())?;
        if args.resume && format != Format::Jsonl {
            bail!(
                "--resume needs JSON Lines output: name the output file .jsonl or pass --format jsonl"
            );
        }
        let top_k = args.top_k.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
        let decisions = Decisions::new(
            top_k,
            args.multi_label
                .then_some(args.threshold.unwrap_or(decide::DEFAULT_COSINE_THRESHOLD)),
            args.min_probability,
        )?;
        let xmp = args
            .write_xmp
            .then(|| XmpOptions::new(args.xmp_naming.into(), &args.xmp_root))
            .transpose()?;
        Ok(Self {
            source,
            format,
            decisions,
            xmp,
        })
    }
}

/// The report writer on `--output` (appending with `--resume`) or stdout, and its name.
fn open_writer(
    args: &ClassifyArgs,
    format: Format,
    scorer: &Scorer,
) -> anyhow::Result<(ResultWriter<Box<dyn Write>>, String)> {
    let out_name = args.output.as_ref().map_or_else(
        || "standard output".to_string(),
        |p| p.display().to_string(),
    );
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            output::open_output(path, args.resume)
                .with_context(|| format!("cannot open {} for writing", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let writer = ResultWriter::new(out, format).with_similarity_name(scorer.similarity_name());
    Ok((writer, out_name))
}

/// The closing line (or what an interrupted run left) and the exit status.
fn summary(
    args: &ClassifyArgs,
    session: &Session,
    tally: &Tally,
    stats: &PipelineStats,
    started: Instant,
    out_name: &str,
) -> u8 {
    let printer = &session.printer;
    if stats.cancelled {
        printer.error(format_args!(
            "interrupted: {} results written to {out_name}; the rest were not labelled{}",
            tally.labelled + tally.failed,
            if args.output.is_some() {
                "; run the same command with --resume to finish"
            } else {
                ""
            }
        ));
        return EXIT_INTERRUPTED;
    }
    printer.note(format_args!(
        "labelled {}, failed {}, skipped {} in {:.1} s",
        tally.labelled,
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64()
    ));
    session.report(stats);
    if tally.failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

/// With `--resume`: the inputs already in `--output` (reported with `--verbose`).
fn already_done(args: &ClassifyArgs, printer: &Printer) -> anyhow::Result<HashSet<String>> {
    let Some(path) = args.output.as_ref().filter(|_| args.resume) else {
        return Ok(HashSet::new());
    };
    let done = output::resume_jsonl(path)
        .with_context(|| format!("cannot read {} to resume", path.display()))?;
    printer.detail(format_args!(
        "resuming: {} inputs already in {}",
        done.len(),
        path.display()
    ));
    Ok(done)
}

/// The labels and prompts from the command line (`--labels`, `--labels-file`, templates).
fn prompt_set(args: &ClassifyArgs) -> anyhow::Result<PromptSet> {
    let labels = match (&args.labels, &args.labels_file) {
        (_, Some(path)) => labels::read_file(path)?,
        (Some(list), None) => labels::parse_list(list)?,
        (None, None) => return Err(labels::LabelError::None.into()),
    };
    let templates =
        PromptSpec::from_options(&args.prompts.template, args.prompts.templates.as_deref())?
            .templates;
    Ok(PromptSet::new(&labels, &templates)?)
}

/// Where the labels come from, before the model is loaded.
enum LabelSource {
    Prompts(PromptSet),
    Probe(Probe),
}

/// The scorer for the loaded model: the probe (checked against the model), or the prompts
/// embedded once with the examples if any; `None` when Ctrl-C stopped reading examples.
fn scorer(
    args: &ClassifyArgs,
    session: &Session,
    source: LabelSource,
) -> anyhow::Result<Option<Scorer>> {
    let classifier = session.classifier();
    Ok(Some(match source {
        LabelSource::Probe(probe) => {
            if let Some(path) = &args.probe {
                probe.check_model(path, &ModelIdentity::of(&session.model.files, classifier)?)?;
            }
            Scorer::Probe(probe)
        }
        LabelSource::Prompts(prompts) => {
            let text = classifier.embed_classes(&prompts)?;
            warn_truncated(
                &session.printer,
                &prompts.prompts,
                &text.truncated,
                classifier.model().text_context(),
            );
            let examples = match &args.examples {
                Some(dir) => match session.examples(dir, &prompts)? {
                    Some(examples) => {
                        let params = example_params(args, session, &text, &examples, &prompts)?;
                        Some((examples, params))
                    }
                    None => return Ok(None),
                },
                None => None,
            };
            Scorer::Prompts {
                prompts,
                text,
                examples,
            }
        }
    }))
}

/// Tip-Adapter's α and β: the flags where given, the rest chosen on the examples when
/// possible; `--verbose` says which and why.
fn example_params(
    args: &ClassifyArgs,
    session: &Session,
    text: &PromptEmbeddings,
    examples: &TipAdapterCache,
    prompts: &PromptSet,
) -> anyhow::Result<TipParams> {
    let (params, choice) = fewshot::choose_params(
        examples,
        session.classifier(),
        text,
        args.examples_weight,
        args.examples_sharpness,
    )?;
    let (a, b) = (params.weight, params.sharpness);
    let printer = &session.printer;
    match choice {
        ParamsChoice::Tuned(t) => printer.detail(format_args!(
            "examples weight {a}, sharpness {b}, chosen by leave-one-out over {} examples: \
             {:.3} of them ranked right (prompts alone {:.3})",
            t.held_out, t.accuracy, t.zero_shot_accuracy
        )),
        ParamsChoice::Kept(NotTuned::Given) => {
            printer.detail(format_args!("examples weight {a}, sharpness {b}, as given"))
        }
        ParamsChoice::Kept(NotTuned::TooFew { class, count }) => printer.detail(format_args!(
            "examples weight {a}, sharpness {b} (Tip-Adapter's defaults where not given): \
             label {:?} has {count} examples, and choosing them by leave-one-out needs {} of \
             each label",
            prompts.classes.get(class).map_or("?", |c| c.name.as_str()),
            fewshot::MIN_EXAMPLES_TO_TUNE
        )),
    }
    Ok(params)
}

fn failed_report(path: String, message: String) -> ImageResult {
    ImageResult {
        path,
        outcome: Outcome::Failed(message),
        uncertain: None,
        labels: None,
    }
}

/// Turns finished batches into reports and placements.
struct Sink<'a, W: Write> {
    args: &'a ClassifyArgs,
    scorer: &'a Scorer,
    decisions: Decisions,
    organizer: Option<Organizer>,
    /// `--write-xmp`: each image's accepted labels go to its sidecar.
    sidecars: Option<SidecarWriter>,
    writer: ResultWriter<W>,
    tally: &'a mut Tally,
    out_name: &'a str,
    /// `--to`: where each batch's embeddings and labels are also stored.
    store: Option<LabelStore>,
}

impl<W: Write> Sink<'_, W> {
    fn write(
        &mut self,
        printer: &Printer,
        classifier: &Checkpoint,
        batch: Vec<Embedded>,
    ) -> anyhow::Result<()> {
        let rows: Vec<&[f32]> = batch
            .iter()
            .filter_map(|d| d.embedding.as_ref().ok().map(Vec::as_slice))
            .collect();
        let mut ranked = self.scorer.rank(classifier, &rows)?.into_iter();
        let mut labelled = Vec::new();
        for done in &batch {
            let report = match &done.embedding {
                Ok(_) => {
                    let scores = ranked
                        .next()
                        .context("internal error: fewer rankings than images")?;
                    self.tally.labelled += 1;
                    self.decisions
                        .report(&done.input.display, &scores, self.scorer)
                }
                Err(err) => {
                    self.tally.failed += 1;
                    failed_report(done.input.display.clone(), err.to_string())
                }
            };
            printer
                .around_progress(|| self.writer.write(&report))
                .with_context(|| write_failed(self.out_name))?;
            if let Some(label) = decide::destination(&report) {
                self.organize(printer, &done.input, label.as_deref());
            }
            if let Some(labels) = decide::accepted(&report) {
                self.write_sidecar(printer, &done.input, &labels);
            }
            if let (Some(_), Ok(embedding)) = (&self.store, &done.embedding) {
                labelled.push((&done.input, report, embedding.as_slice()));
            }
        }
        if let Some(store) = &mut self.store {
            let labelled: Vec<_> = labelled
                .iter()
                .map(|(input, report, row)| (*input, report, *row))
                .collect();
            store.store(&labelled)?;
        }
        Ok(())
    }

    fn write_sidecar(&mut self, printer: &Printer, input: &Input, labels: &[String]) {
        let Some(sidecars) = &mut self.sidecars else {
            return;
        };
        let Source::File(path) = &input.source else {
            printer.error(format_args!(
                "{}: no sidecar written: only local files have sidecars",
                input.display
            ));
            return;
        };
        let tags = xmp::Tags {
            labels,
            description: None,
        };
        match sidecars.write(path, tags) {
            Ok(written) => {
                if let Some(other) = &written.shared_with {
                    printer.warn(format_args!(
                        "{} and {} share the sidecar {}, which now holds the labels of {}; \
                         use --xmp-naming append to give each file its own",
                        other.display(),
                        path.display(),
                        written.sidecar.display(),
                        path.display()
                    ));
                }
                let changed = written.change != xmp::Change::Unchanged;
                if (self.args.dry_run && changed) || printer.verbose() {
                    printer.plain(written);
                }
            }
            Err(err) => {
                self.tally.failed += 1;
                printer.error(err);
            }
        }
    }

    fn organize(&mut self, printer: &Printer, input: &Input, label: Option<&str>) {
        let Some(organizer) = &mut self.organizer else {
            return;
        };
        let Source::File(path) = &input.source else {
            printer.error(format_args!(
                "{}: not organized: only local files can be sorted",
                input.display
            ));
            return;
        };
        match organizer.place(path, label) {
            Ok(placement) => {
                if self.args.dry_run || printer.verbose() {
                    printer.plain(placement);
                }
            }
            Err(err) => {
                self.tally.failed += 1;
                printer.error(err);
            }
        }
    }
}
