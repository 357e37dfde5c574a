//! `vlm classify`: rank labels for each image, write reports, optionally sort the files.
//! Labels are scored by their prompts, by prompts and example images (`--examples`), or by
//! a linear probe (`--probe`).

use std::io::{self, Write};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::ProgressBar;

use super::{
    find_inputs, load_model, open_cache, output_format, pipeline_options, progress_bar,
    report_encoder, report_failure, warn_truncated, write_failed, EXIT_INTERRUPTED, EXIT_OK,
    EXIT_SOME_FAILED,
};
use crate::cli::ClassifyArgs;
use vlm::cache::EmbeddingCache;
use vlm::embedder::{self, Embedded};
use vlm::evaluation::PromptSpec;
use vlm::family::Scoring;
use vlm::fewshot::{self, ExampleCache, TipParams};
use vlm::inputs::{Input, Source};
use vlm::labels::{self, PromptSet};
use vlm::organize::Organizer;
use vlm::output::{self, Format, ImageReport, LabelResult, Outcome, ReportWriter};
use vlm::probe::{ModelIdentity, Probe};
use vlm::score::Score;
use vlm::{Classifier, PromptEmbeddings};

/// Counters for the summary line.
#[derive(Default)]
struct Tally {
    labelled: usize,
    failed: usize,
    skipped: usize,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let source = match &args.probe {
        Some(path) => LabelSource::Probe(Probe::load(path)?),
        None => LabelSource::Prompts(prompt_set(args)?),
    };
    let params = TipParams::new(args.examples_weight, args.examples_sharpness)?;
    let format = output_format(args.format.map(Format::from), args.output.as_deref())?;
    if args.resume && format != Format::Jsonl {
        bail!(
            "--resume needs JSON Lines output: name the output file .jsonl or pass --format jsonl"
        );
    }
    if let Some(p) = args.min_probability {
        if !(0.0..=1.0).contains(&p) {
            bail!("--min-probability must be between 0 and 1, got {p}");
        }
    }

    let found = find_inputs(&args.inputs, &args.filter, args.verbose)?;
    let mut tally = Tally {
        failed: found.failed,
        skipped: found.skipped,
        ..Tally::default()
    };
    let mut todo = found.inputs;
    if let Some(path) = args.output.as_ref().filter(|_| args.resume) {
        let done = output::resume_jsonl(path)
            .with_context(|| format!("cannot read {} to resume", path.display()))?;
        let before = todo.len();
        todo.retain(|input| !done.contains(&input.display));
        if args.verbose {
            eprintln!(
                "vlm: resuming: {} inputs already in {}",
                before - todo.len(),
                path.display()
            );
        }
    }

    let model = load_model(&args.model)?;
    let classifier = &model.classifier;
    let cache = open_cache(&args.model, &model)?;
    let scorer = match source {
        LabelSource::Probe(probe) => {
            if let Some(path) = &args.probe {
                probe.check_model(path, &ModelIdentity::of(&model.files, classifier)?)?;
            }
            Scorer::Probe(probe)
        }
        LabelSource::Prompts(prompts) => {
            let text = classifier.embed_classes(&prompts)?;
            if !args.quiet {
                warn_truncated(
                    &prompts.prompts,
                    &text.truncated,
                    classifier.model().text_context(),
                );
            }
            let examples = match &args.examples {
                Some(dir) => {
                    match load_examples(args, dir, classifier, cache.as_ref(), &prompts)? {
                        Some(examples) => Some((examples, params)),
                        None => return Ok(EXIT_INTERRUPTED),
                    }
                }
                None => None,
            };
            Scorer::Prompts {
                prompts,
                text,
                examples,
            }
        }
    };
    let organizer = match (args.organize, &args.dest) {
        (Some(mode), Some(dest)) => Some(Organizer::new(dest, mode.into(), args.dry_run)?),
        _ => None,
    };

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
    let progress = progress_bar(todo.len(), args.quiet, "images");

    let mut writer = ReportWriter::new(out, format).with_scoring(classifier.scoring().name());
    if let Scorer::Probe(_) = scorer {
        // A probe is its own softmax classifier over the classes, whatever the family.
        writer = writer
            .with_similarity_name("logit")
            .with_scoring("probe-softmax");
    }
    for (path, message) in found.unreadable {
        let report = ImageReport {
            path,
            outcome: Outcome::Failed(message),
            uncertain: None,
            labels: None,
        };
        writer
            .write(&report)
            .with_context(|| write_failed(&out_name))?;
    }
    let mut sink = Sink {
        args,
        multi_label: multi_label_threshold(args, &scorer, classifier)?,
        scorer: &scorer,
        classifier,
        organizer,
        writer,
        progress: &progress,
        tally: &mut tally,
        out_name: &out_name,
    };
    let summary = embedder::embed_inputs(
        classifier,
        cache.as_ref(),
        todo.into_iter(),
        pipeline_options(&args.model),
        |batch| sink.write(batch),
    )?;
    let Sink { writer, .. } = sink;
    writer.finish().with_context(|| write_failed(&out_name))?;
    progress.finish_and_clear();
    if let (Some(err), false) = (&summary.cache_error, args.quiet) {
        eprintln!("vlm: warning: {err}");
    }
    let stats = summary.stats;
    if stats.cancelled {
        eprintln!(
            "vlm: interrupted: {} results written to {out_name}; the rest were not labelled{}",
            tally.labelled + tally.failed,
            if args.output.is_some() {
                "; run the same command with --resume to finish"
            } else {
                ""
            }
        );
        return Ok(EXIT_INTERRUPTED);
    }

    if !args.quiet {
        eprintln!(
            "vlm: labelled {}, failed {}, skipped {} in {:.1} s",
            tally.labelled,
            tally.failed,
            tally.skipped,
            started.elapsed().as_secs_f64()
        );
    }
    if args.verbose {
        report_encoder(&stats, cache.as_ref());
    }
    Ok(if tally.failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
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

/// Reads and embeds `--examples`, reporting what could not be used; `None` when Ctrl-C
/// stopped it.
fn load_examples(
    args: &ClassifyArgs,
    dir: &std::path::Path,
    classifier: &Classifier,
    cache: Option<&EmbeddingCache>,
    prompts: &PromptSet,
) -> anyhow::Result<Option<ExampleCache>> {
    let examples = fewshot::load_examples(
        classifier,
        cache,
        dir,
        &prompts.classes,
        pipeline_options(&args.model),
    )?;
    if examples.summary.stats.cancelled {
        eprintln!("vlm: interrupted while reading the examples; nothing was labelled");
        return Ok(None);
    }
    for err in &examples.unreadable {
        eprintln!("vlm: example left out: {err}");
    }
    for (display, err) in &examples.failed {
        let message = err.to_string();
        if message.contains(display.as_str()) {
            eprintln!("vlm: example left out: {message}");
        } else {
            eprintln!("vlm: example left out: {display}: {message}");
        }
    }
    if args.verbose {
        for (path, reason) in &examples.skipped {
            eprintln!("vlm: skipped example {}: {reason}", path.display());
        }
    }
    if !args.quiet {
        if let Some(err) = &examples.summary.cache_error {
            eprintln!("vlm: warning: {err}");
        }
        let counts = examples.cache.counts();
        eprintln!(
            "vlm: {} examples for {} of {} labels from {}",
            examples.cache.len(),
            counts.iter().filter(|&&n| n > 0).count(),
            counts.len(),
            dir.display()
        );
        if !examples.without_examples.is_empty() {
            eprintln!(
                "vlm: warning: no examples for {}: scored by the prompt alone, so chosen less often than labels with examples",
                examples.without_examples.join(", ")
            );
        }
    }
    Ok(Some(examples.cache))
}

/// Where the labels come from, before the model is loaded.
enum LabelSource {
    Prompts(PromptSet),
    Probe(Probe),
}

/// How each image's labels are scored.
enum Scorer {
    /// Prompts, and example images when given.
    Prompts {
        prompts: PromptSet,
        text: PromptEmbeddings,
        examples: Option<(ExampleCache, TipParams)>,
    },
    /// A linear probe.
    Probe(Probe),
}

impl Scorer {
    fn rank(&self, classifier: &Classifier, rows: &[&[f32]]) -> vlm::Result<Vec<Vec<Score>>> {
        match self {
            Self::Prompts {
                text,
                examples: None,
                ..
            } => classifier.rank_rows(rows, text),
            Self::Prompts {
                text,
                examples: Some((examples, params)),
                ..
            } => {
                let model = classifier.model();
                let logits = (model.logit_scale(), model.logit_bias());
                Ok(classifier
                    .rank_rows(rows, text)?
                    .iter()
                    .zip(rows)
                    .map(|(scores, row)| {
                        examples.rank_scored(row, scores, logits, model.scoring(), *params)
                    })
                    .collect())
            }
            Self::Probe(probe) => Ok(rows.iter().map(|row| probe.rank(row)).collect()),
        }
    }

    fn label(&self, index: usize) -> &str {
        match self {
            Self::Prompts { prompts, .. } => &prompts.classes[index].name,
            Self::Probe(probe) => &probe.labels()[index],
        }
    }

    /// The class's (first) prompt; a probe has none.
    fn prompt(&self, index: usize) -> &str {
        match self {
            Self::Prompts { prompts, .. } => prompts.first_prompt(index),
            Self::Probe(_) => "",
        }
    }
}

/// Turns finished batches into reports and placements.
/// `--multi-label`'s threshold and what it applies to: a sigmoid-scored model's labels are
/// each a calibrated yes/no, so the threshold is on the probability (default 0.5); a softmax
/// share depends on the other labels, so for those models it is on the cosine (default 0.25);
/// a probe's on its logit.
fn multi_label_threshold(
    args: &ClassifyArgs,
    scorer: &Scorer,
    classifier: &Classifier,
) -> anyhow::Result<Option<(f32, bool)>> {
    if !args.multi_label {
        return Ok(None);
    }
    let on_probability =
        !matches!(scorer, Scorer::Probe(_)) && classifier.scoring() == Scoring::Sigmoid;
    let threshold = args
        .threshold
        .unwrap_or(if on_probability { 0.5 } else { 0.25 });
    if on_probability && !(0.0..=1.0).contains(&threshold) {
        bail!(
            "--threshold is a probability (0-1) for this {} model, whose scores are sigmoids; got {threshold}",
            classifier.family()
        );
    }
    Ok(Some((threshold, on_probability)))
}

struct Sink<'a, W: Write> {
    args: &'a ClassifyArgs,
    /// `--multi-label`'s threshold, and whether it applies to the probability (sigmoid
    /// scoring) rather than the similarity.
    multi_label: Option<(f32, bool)>,
    scorer: &'a Scorer,
    classifier: &'a Classifier,
    organizer: Option<Organizer>,
    writer: ReportWriter<W>,
    progress: &'a ProgressBar,
    tally: &'a mut Tally,
    out_name: &'a str,
}

impl<W: Write> Sink<'_, W> {
    fn write(&mut self, batch: Vec<Embedded>) -> anyhow::Result<()> {
        let rows: Vec<&[f32]> = batch
            .iter()
            .filter_map(|d| d.embedding.as_ref().ok().map(Vec::as_slice))
            .collect();
        let mut ranked = self.scorer.rank(self.classifier, &rows)?.into_iter();
        for done in &batch {
            let report = match &done.embedding {
                Ok(_) => {
                    let scores = ranked
                        .next()
                        .context("internal error: fewer rankings than images")?;
                    self.tally.labelled += 1;
                    self.report(&done.input, &scores)
                }
                Err(err) => {
                    self.tally.failed += 1;
                    report_failure(self.progress, &done.input.display, err);
                    ImageReport {
                        path: done.input.display.clone(),
                        outcome: Outcome::Failed(err.to_string()),
                        uncertain: None,
                        labels: None,
                    }
                }
            };
            self.progress
                .suspend(|| self.writer.write(&report))
                .with_context(|| write_failed(self.out_name))?;
            if let Outcome::Ranked(_) = report.outcome {
                self.organize(&done.input, &report)?;
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    fn report(&self, input: &Input, scores: &[Score]) -> ImageReport {
        let args = self.args;
        let top_k = args
            .top_k
            .map_or(usize::MAX, |k| usize::try_from(k).unwrap_or(usize::MAX));
        let passes = |s: &Score| match self.multi_label {
            Some((threshold, true)) => s.probability >= threshold,
            Some((threshold, false)) => s.similarity >= threshold,
            None => false,
        };
        let results = scores
            .iter()
            .take(top_k)
            .map(|s| LabelResult {
                label: self.scorer.label(s.index).to_string(),
                prompt: self.scorer.prompt(s.index).to_string(),
                probability: s.probability,
                similarity: s.similarity,
                selected: self.multi_label.map(|_| passes(s)),
            })
            .collect();
        let labels = self.multi_label.map(|_| {
            scores
                .iter()
                .filter(|s| passes(s))
                .map(|s| self.scorer.label(s.index).to_string())
                .collect()
        });
        let uncertain = args
            .min_probability
            .map(|p| scores.first().is_none_or(|top| top.probability < p));
        ImageReport {
            path: input.display.clone(),
            outcome: Outcome::Ranked(results),
            uncertain,
            labels,
        }
    }

    fn organize(&mut self, input: &Input, report: &ImageReport) -> anyhow::Result<()> {
        let Some(organizer) = &mut self.organizer else {
            return Ok(());
        };
        let Source::File(path) = &input.source else {
            self.progress.suspend(|| {
                eprintln!(
                    "vlm: {}: not organized: only local files can be sorted",
                    input.display
                )
            });
            return Ok(());
        };
        let label = match (&report.labels, &report.outcome) {
            (Some(selected), _) => selected.first().cloned(),
            (None, _) if report.uncertain == Some(true) => None,
            (None, Outcome::Ranked(results)) => results.first().map(|r| r.label.clone()),
            (None, Outcome::Failed(_)) => return Ok(()),
        };
        match organizer.place(path, label.as_deref()) {
            Ok(placement) => {
                if self.args.dry_run || self.args.verbose {
                    self.progress.suspend(|| eprintln!("{placement}"));
                }
            }
            Err(err) => {
                self.tally.failed += 1;
                self.progress.suspend(|| eprintln!("vlm: {err}"));
            }
        }
        Ok(())
    }
}
