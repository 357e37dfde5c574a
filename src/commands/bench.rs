//! `vlm bench`: throughput of this build on this machine, for BENCHMARKS.md and for users
//! choosing a model, batch size or device.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{load_model, peak_rss_mib, EXIT_OK};
use crate::cli::BenchArgs;
use vlm::bench::{self, ImageRate, TextRate};

/// Process start to printed result, over several runs.
#[derive(Debug, Serialize)]
struct ColdStart {
    runs: usize,
    best_seconds: f64,
    median_seconds: f64,
}

/// One `vlm classify` over a folder, start to finish.
#[derive(Debug, Serialize)]
struct FolderRun {
    folder: PathBuf,
    images: usize,
    seconds: f64,
    images_per_second: f64,
    peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    model: String,
    device: String,
    dtype: String,
    /// Which implementation ran the encoders: "candle" or "packed avx512" and the like.
    kernels: String,
    threads: usize,
    cpu: Option<String>,
    load_seconds: f64,
    gemm_gflops: f64,
    /// The packed kernels' rate on the same shape, f32 and bf16 (null without AMX or
    /// AVX512-BF16), and int8 in GOP/s (activations quantised in every call).
    kernel_f32_gflops: f64,
    kernel_bf16_gflops: Option<f64>,
    kernel_int8_gops: Option<f64>,
    /// The int8 kernel measured (the model's, or the one `--dtype int8` would use).
    kernel_int8: Option<&'static str>,
    image_gflop: f64,
    image_bound_per_second: f64,
    image: Vec<ImageRate>,
    text: Option<TextRate>,
    cold_start: Option<ColdStart>,
    folder: Option<FolderRun>,
    peak_rss_mib: Option<f64>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    if !(args.seconds >= 0.0 && args.seconds.is_finite()) {
        bail!(
            "--seconds must be a non-negative number, got {}",
            args.seconds
        );
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let mut stdout = io::stdout().lock();
    let mut say = |line: String| -> io::Result<()> {
        if args.json {
            Ok(())
        } else {
            writeln!(stdout, "{line}")
        }
    };
    let started = Instant::now();
    let model = load_model(&args.model)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let classifier = &model.classifier;
    let config = classifier.config();
    let device = classifier.model().device();
    let threads = candle_core::utils::get_num_threads();
    let cpu = cpu_name();
    say(format!(
        "vlm {} bench: {} on {} ({}), {} ({}), {threads} threads; model loaded in {load_seconds:.2} s",
        env!("CARGO_PKG_VERSION"),
        model.files.id,
        device_name(device),
        cpu.as_deref().unwrap_or("unknown CPU"),
        classifier.compute_fingerprint(),
        classifier.model().kernels(),
    ))?;

    let rates = matmul_rates(classifier, budget, &mut say)?;
    let (gemm, kernel_f32, kernel_bf16, rate) =
        (rates.gemm, rates.kernel_f32, rates.kernel_bf16, rates.model);
    let (kernel_int8, kernel_int8_gops) = rates.kernel_int8;
    let image_gflop = bench::image_flops(&config.vision, config.projection_dim) / 1e9;
    let bound = bench::image_bound(config, rate);
    say(format!(
        "one image is {image_gflop:.2} GFLOP, so at {rate:.1} GFLOP/s the image tower is bound at {bound:.1} images/s"
    ))?;

    let image = image_rates(args, classifier, budget, bound, &mut say)?;
    let text = text_rate(args, classifier, budget, &mut say)?;
    let (cold_start, folder) = process_runs(args, &mut say)?;

    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        model: model.files.id.clone(),
        device: device_name(device).to_string(),
        dtype: classifier.numeric_fingerprint(),
        kernels: classifier.model().kernels().to_string(),
        threads,
        cpu,
        load_seconds,
        gemm_gflops: gemm,
        kernel_f32_gflops: kernel_f32,
        kernel_bf16_gflops: kernel_bf16,
        kernel_int8_gops,
        kernel_int8: Some(kernel_int8.name()),
        image_gflop,
        image_bound_per_second: bound,
        image,
        text,
        cold_start,
        folder,
        peak_rss_mib: peak_rss_mib(),
    };
    if args.json {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    }
    Ok(EXIT_OK)
}

/// Matrix-multiply rates: candle's, the packed kernels' in f32, bf16 (where AMX or
/// AVX512-BF16 is present) and int8, and the one of the products this model actually runs.
struct MatmulRates {
    gemm: f64,
    kernel_f32: f64,
    kernel_bf16: Option<f64>,
    kernel_int8: (vlm::model::Int8Kernel, Option<f64>),
    model: f64,
}

fn matmul_rates(
    classifier: &vlm::Checkpoint,
    budget: Duration,
    say: &mut impl FnMut(String) -> io::Result<()>,
) -> anyhow::Result<MatmulRates> {
    let gemm = bench::gemm_gflops(classifier.model().device(), budget)?;
    let kernel_f32 = bench::kernel_gflops(None, budget)?.unwrap_or(0.0);
    // The bf16 kernel the model uses, or would use with --dtype bf16.
    let bf16 = super::bf16_kernel()?.or_else(vlm::model::Bf16Kernel::detect);
    let kernel_bf16 = match bf16 {
        Some(kernel) => bench::kernel_gflops(Some(kernel), budget)?,
        None => None,
    };
    // Likewise the int8 kernel.
    let int8 = super::int8_kernel()?.unwrap_or_else(vlm::model::Int8Kernel::detect);
    let kernel_int8 = bench::kernel_int8_gops(int8, budget)?;
    say(format!(
        "matmul: candle {gemm:.1} GFLOP/s; packed kernels f32 {kernel_f32:.1} GFLOP/s, bf16 {}, int8 {}",
        match (bf16, kernel_bf16) {
            (Some(kernel), Some(r)) => format!("{r:.1} GFLOP/s ({})", kernel.name()),
            _ => "n/a (no AMX or AVX512-BF16)".to_string(),
        },
        match kernel_int8 {
            Some(r) => format!("{r:.1} GOP/s ({})", int8.name()),
            None => format!("n/a ({} does not run here)", int8.name()),
        }
    ))?;
    let model = match classifier.model().precision() {
        _ if classifier.model().kernels() == "candle" => gemm,
        vlm::model::Precision::Float(candle_core::DType::BF16) => kernel_bf16.unwrap_or(gemm),
        vlm::model::Precision::Int8 => kernel_int8.unwrap_or(gemm),
        _ => kernel_f32,
    };
    Ok(MatmulRates {
        gemm,
        kernel_f32,
        kernel_bf16,
        kernel_int8: (int8, kernel_int8),
        model,
    })
}

/// The text tower's rate on `--text-prompts` distinct prompts (none when 0).
fn text_rate(
    args: &BenchArgs,
    classifier: &vlm::Checkpoint,
    budget: Duration,
    say: &mut impl FnMut(String) -> io::Result<()>,
) -> anyhow::Result<Option<TextRate>> {
    if args.text_prompts == 0 {
        return Ok(None);
    }
    let rate = bench::text_rate(classifier, args.text_prompts, budget)?;
    say(format!(
        "text tower, {} prompts: {:.1} prompts/s",
        rate.prompts, rate.prompts_per_second
    ))?;
    Ok(Some(rate))
}

/// The image tower's rate at each `--batch-sizes` entry.
fn image_rates(
    args: &BenchArgs,
    classifier: &vlm::Checkpoint,
    budget: Duration,
    bound: f64,
    say: &mut impl FnMut(String) -> io::Result<()>,
) -> anyhow::Result<Vec<ImageRate>> {
    let mut image = Vec::new();
    for &batch in &args.batch_sizes {
        let batch = usize::try_from(batch).context("batch size too large")?;
        let rate = bench::image_rate(classifier, batch, budget)?;
        say(format!(
            "image tower, batch {batch:>3}: {:8.2} images/s ({:.0}% of the matmul bound)",
            rate.images_per_second,
            100.0 * rate.images_per_second / bound
        ))?;
        image.push(rate);
    }
    Ok(image)
}

/// `--cold-start` and `--folder`: whole `vlm classify` processes, timed from outside.
fn process_runs(
    args: &BenchArgs,
    say: &mut impl FnMut(String) -> io::Result<()>,
) -> anyhow::Result<(Option<ColdStart>, Option<FolderRun>)> {
    let extra: Vec<String> = args
        .classify_args
        .as_deref()
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let cold_start = if args.cold_start {
        let cold = cold_start(args, &extra)?;
        say(format!(
            "cold start (one 3000x2000 JPEG, two labels): best {:.3} s, median {:.3} s of {} runs",
            cold.best_seconds, cold.median_seconds, cold.runs
        ))?;
        Some(cold)
    } else {
        None
    };
    let folder = match &args.folder {
        Some(dir) => {
            let run = folder_run(args, dir, &extra)?;
            say(format!(
                "folder {}: {} images in {:.2} s = {:.2} images/s, peak memory {}",
                dir.display(),
                run.images,
                run.seconds,
                run.images_per_second,
                run.peak_rss_mib
                    .map_or_else(|| "unknown".to_string(), |m| format!("{m:.1} MiB"))
            ))?;
            Some(run)
        }
        None => None,
    };
    Ok((cold_start, folder))
}

fn device_name(device: &candle_core::Device) -> &'static str {
    match device {
        candle_core::Device::Cpu => "cpu",
        candle_core::Device::Cuda(_) => "cuda",
        candle_core::Device::Metal(_) => "metal",
    }
}

/// The CPU's model name, where the OS tells it (Linux).
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// A `vlm classify` child with the same model, device and threads as this run.
fn classify_command(args: &BenchArgs, extra: &[String]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the vlm executable to time")?;
    let mut command = Command::new(exe);
    command
        .arg("classify")
        .args(["--labels", "dog,cat", "--model", &args.model.spec])
        .args(["--device", device_arg(args)])
        .args(extra)
        .stdin(Stdio::null());
    if let Some(revision) = &args.model.revision {
        command.args(["--revision", revision]);
    }
    if let Some(threads) = args.model.threads {
        command.args(["--threads", &threads.to_string()]);
    }
    if let Some(workers) = args.model.workers {
        command.args(["--workers", &workers.to_string()]);
    }
    Ok(command)
}

fn device_arg(args: &BenchArgs) -> &'static str {
    use crate::cli::DeviceArg;
    match args.model.device {
        DeviceArg::Auto => "auto",
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
        DeviceArg::Metal => "metal",
    }
}

/// Times `vlm classify` on one camera-size JPEG, five times after a warm-up run.
fn cold_start(args: &BenchArgs, extra: &[String]) -> anyhow::Result<ColdStart> {
    let dir = tempfile_dir()?;
    let image = dir.join("camera.jpg");
    write_camera_jpeg(&image)?;
    let run = || -> anyhow::Result<f64> {
        let started = Instant::now();
        let output = classify_command(args, extra)?
            .arg(&image)
            .arg("--quiet")
            .output()
            .context("cannot start vlm classify")?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "vlm classify failed during --cold-start: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(seconds)
    };
    run()?;
    let mut times = (0..5).map(|_| run()).collect::<anyhow::Result<Vec<_>>>()?;
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(f64::total_cmp);
    Ok(ColdStart {
        runs: times.len(),
        best_seconds: times[0],
        median_seconds: times[times.len() / 2],
    })
}

/// Times `vlm classify` over a folder, reading its summary and peak memory from --verbose.
fn folder_run(args: &BenchArgs, dir: &Path, extra: &[String]) -> anyhow::Result<FolderRun> {
    let batch = args.batch_sizes.iter().copied().max().unwrap_or(32);
    let started = Instant::now();
    let output = classify_command(args, extra)?
        .arg(dir)
        .args(["--batch-size", &batch.to_string()])
        .args(["--format", "jsonl", "--verbose"])
        .stdout(Stdio::null())
        .output()
        .context("cannot start vlm classify")?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "vlm classify failed on {}: {}",
            dir.display(),
            stderr.trim()
        );
    }
    let number_after = |prefix: &str| -> Option<f64> {
        let line = stderr.lines().find_map(|l| l.strip_prefix(prefix))?;
        line.split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse()
            .ok()
    };
    let images = number_after("vlm: labelled ").map_or(0, |n| n as usize);
    Ok(FolderRun {
        folder: dir.to_path_buf(),
        images,
        seconds,
        images_per_second: images as f64 / seconds,
        peak_rss_mib: number_after("vlm: peak memory (resident): "),
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vlm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A 3000x2000 JPEG with smooth gradients and fine texture, about the size of a photo.
fn write_camera_jpeg(path: &Path) -> anyhow::Result<()> {
    let image = image::RgbImage::from_fn(3000, 2000, |x, y| {
        let texture = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 23) as u8;
        image::Rgb([
            ((x * 255 / 3000) as u8).wrapping_add(texture),
            ((y * 255 / 2000) as u8).wrapping_add(texture / 2),
            (((x + y) % 256) as u8) / 2 + texture,
        ])
    });
    image
        .save_with_format(path, image::ImageFormat::Jpeg)
        .with_context(|| format!("cannot write {}", path.display()))
}
