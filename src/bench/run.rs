//! `vlm bench` as a whole: the matrix-multiply rates, the towers at each batch size, and
//! whole `vlm classify` processes timed from outside, each figure said as it is measured.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    cpu_name, gemm_gflops, image_bound, image_flops, image_rate, kernel_gflops, kernel_int8_gops,
    text_rate, ImageRate, TextRate,
};
use crate::checkpoint::Checkpoint;
use crate::model::{Bf16Kernel, Int8Kernel, Precision};
use crate::session::{bf16_kernel, int8_kernel, peak_rss_mib, Session, SessionError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Batch sizes at which to time the image tower.
    pub batch_sizes: Vec<usize>,
    /// Distinct prompts to time the text tower on (0 skips it).
    pub text_prompts: usize,
    /// Time to spend on each figure; the best run counts.
    pub budget: Duration,
    /// Also time a whole classify process on one camera-size JPEG.
    pub cold_start: bool,
    /// Also time a whole classify process over this folder.
    pub folder: Option<PathBuf>,
    /// The arguments of those classify processes (this executable's `classify` and its
    /// model flags); the image or folder is added.
    pub classify: Vec<String>,
}

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Measure(#[from] crate::error::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot write the results")]
    Say(#[source] io::Error),
    #[error("{what}")]
    Process {
        what: String,
        #[source]
        cause: Option<io::Error>,
    },
}

/// Process start to printed result, over several runs.
#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub runs: usize,
    pub best_seconds: f64,
    pub median_seconds: f64,
}

/// One `vlm classify` over a folder, start to finish.
#[derive(Debug, Serialize)]
pub struct FolderRun {
    pub folder: PathBuf,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Everything measured, as `vlm bench --json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub model: String,
    pub device: String,
    pub dtype: String,
    /// Which implementation ran the encoders: "candle" or "packed avx512" and the like.
    pub kernels: String,
    pub threads: usize,
    pub cpu: Option<String>,
    pub load_seconds: f64,
    pub gemm_gflops: f64,
    /// The packed kernels' rate on the same shape, f32 and bf16 (null without AMX or
    /// AVX512-BF16), and int8 in GOP/s (activations quantised in every call).
    pub kernel_f32_gflops: f64,
    pub kernel_bf16_gflops: Option<f64>,
    pub kernel_int8_gops: Option<f64>,
    /// The int8 kernel measured (the model's, or the one `--dtype int8` would use).
    pub kernel_int8: Option<&'static str>,
    pub image_gflop: f64,
    pub image_bound_per_second: f64,
    pub image: Vec<ImageRate>,
    pub text: Option<TextRate>,
    pub cold_start: Option<ColdStart>,
    pub folder: Option<FolderRun>,
    pub peak_rss_mib: Option<f64>,
}

/// Something that takes each line of the report as it is measured.
pub type Say<'a> = &'a mut dyn FnMut(String) -> io::Result<()>;

/// Measures the loaded model of `session` (loaded in `load_seconds`) as `options` asks,
/// saying each figure as it comes.
pub fn run(
    session: &Session,
    load_seconds: f64,
    options: &BenchOptions,
    say: Say,
) -> Result<Report, BenchError> {
    let checkpoint = &session.checkpoint;
    let config = checkpoint.config();
    let device = checkpoint.model().device();
    let threads = candle_core::utils::get_num_threads();
    let cpu = cpu_name();
    let mut say = |line: String| say(line).map_err(BenchError::Say);
    say(format!(
        "vlm {} bench: {} on {} ({}), {} ({}), {threads} threads; model loaded in {load_seconds:.2} s",
        env!("CARGO_PKG_VERSION"),
        session.files.id,
        device_name(device),
        cpu.as_deref().unwrap_or("unknown CPU"),
        checkpoint.compute_fingerprint(),
        checkpoint.model().kernels(),
    ))?;

    let rates = matmul_rates(checkpoint, options.budget, &mut say)?;
    let rate = rates.model;
    let image_gflop = image_flops(&config.vision, config.projection_dim) / 1e9;
    let bound = image_bound(config, rate);
    say(format!(
        "one image is {image_gflop:.2} GFLOP, so at {rate:.1} GFLOP/s the image tower is bound at {bound:.1} images/s"
    ))?;

    let mut image = Vec::new();
    for &batch in &options.batch_sizes {
        let rate = image_rate(checkpoint, batch, options.budget)?;
        say(format!(
            "image tower, batch {batch:>3}: {:8.2} images/s ({:.0}% of the matmul bound)",
            rate.images_per_second,
            100.0 * rate.images_per_second / bound
        ))?;
        image.push(rate);
    }
    let text = match options.text_prompts {
        0 => None,
        prompts => {
            let rate = text_rate(checkpoint, prompts, options.budget)?;
            say(format!(
                "text tower, {} prompts: {:.1} prompts/s",
                rate.prompts, rate.prompts_per_second
            ))?;
            Some(rate)
        }
    };
    let (cold_start, folder) = process_runs(options, &mut say)?;

    Ok(Report {
        version: env!("CARGO_PKG_VERSION"),
        model: session.files.id.clone(),
        device: device_name(device).to_string(),
        dtype: checkpoint.numeric_fingerprint(),
        kernels: checkpoint.model().kernels().to_string(),
        threads,
        cpu,
        load_seconds,
        gemm_gflops: rates.gemm,
        kernel_f32_gflops: rates.kernel_f32,
        kernel_bf16_gflops: rates.kernel_bf16,
        kernel_int8_gops: rates.kernel_int8.1,
        kernel_int8: Some(rates.kernel_int8.0.name()),
        image_gflop,
        image_bound_per_second: bound,
        image,
        text,
        cold_start,
        folder,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Matrix-multiply rates: candle's, the packed kernels' in f32, bf16 (where AMX or
/// AVX512-BF16 is present) and int8, and the one of the products this model actually runs.
struct MatmulRates {
    gemm: f64,
    kernel_f32: f64,
    kernel_bf16: Option<f64>,
    kernel_int8: (Int8Kernel, Option<f64>),
    model: f64,
}

fn matmul_rates(
    checkpoint: &Checkpoint,
    budget: Duration,
    say: &mut impl FnMut(String) -> Result<(), BenchError>,
) -> Result<MatmulRates, BenchError> {
    let gemm = gemm_gflops(checkpoint.model().device(), budget)?;
    let kernel_f32 = kernel_gflops(None, budget)?.unwrap_or(0.0);
    // The bf16 kernel the model uses, or would use with --dtype bf16.
    let bf16 = bf16_kernel()?.or_else(Bf16Kernel::detect);
    let kernel_bf16 = match bf16 {
        Some(kernel) => kernel_gflops(Some(kernel), budget)?,
        None => None,
    };
    // Likewise the int8 kernel.
    let int8 = int8_kernel()?.unwrap_or_else(Int8Kernel::detect);
    let kernel_int8 = kernel_int8_gops(int8, budget)?;
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
    let model = match checkpoint.model().precision() {
        _ if checkpoint.model().kernels() == "candle" => gemm,
        Precision::Float(candle_core::DType::BF16) => kernel_bf16.unwrap_or(gemm),
        Precision::Int8 => kernel_int8.unwrap_or(gemm),
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

/// `cold_start` and `folder`: whole classify processes, timed from outside.
fn process_runs(
    options: &BenchOptions,
    say: &mut impl FnMut(String) -> Result<(), BenchError>,
) -> Result<(Option<ColdStart>, Option<FolderRun>), BenchError> {
    let cold_start = if options.cold_start {
        let cold = cold_start(options)?;
        say(format!(
            "cold start (one 3000x2000 JPEG, two labels): best {:.3} s, median {:.3} s of {} runs",
            cold.best_seconds, cold.median_seconds, cold.runs
        ))?;
        Some(cold)
    } else {
        None
    };
    let folder = match &options.folder {
        Some(dir) => {
            let run = folder_run(options, dir)?;
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

fn process_error(what: String, cause: Option<io::Error>) -> BenchError {
    BenchError::Process { what, cause }
}

/// A classify child of this executable with the options' arguments.
fn classify_command(options: &BenchOptions) -> Result<Command, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| process_error("cannot find the vlm executable to time".into(), Some(e)))?;
    let mut command = Command::new(exe);
    command.args(&options.classify).stdin(Stdio::null());
    Ok(command)
}

/// Times classify on one camera-size JPEG, five times after a warm-up run.
fn cold_start(options: &BenchOptions) -> Result<ColdStart, BenchError> {
    let dir = std::env::temp_dir().join(format!("vlm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| process_error(format!("cannot create {}", dir.display()), Some(e)))?;
    let image = dir.join("camera.jpg");
    write_camera_jpeg(&image)?;
    let run = || -> Result<f64, BenchError> {
        let started = Instant::now();
        let output = classify_command(options)?
            .arg(&image)
            .arg("--quiet")
            .output()
            .map_err(|e| process_error("cannot start vlm classify".into(), Some(e)))?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            return Err(process_error(
                format!(
                    "vlm classify failed during --cold-start: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                None,
            ));
        }
        Ok(seconds)
    };
    run()?;
    let mut times = (0..5).map(|_| run()).collect::<Result<Vec<_>, _>>()?;
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(f64::total_cmp);
    Ok(ColdStart {
        runs: times.len(),
        best_seconds: times[0],
        median_seconds: times[times.len() / 2],
    })
}

/// Times classify over a folder, reading its summary and peak memory from `--verbose`.
fn folder_run(options: &BenchOptions, dir: &Path) -> Result<FolderRun, BenchError> {
    let batch = options.batch_sizes.iter().copied().max().unwrap_or(32);
    let started = Instant::now();
    let output = classify_command(options)?
        .arg(dir)
        .args(["--batch-size", &batch.to_string()])
        .args(["--format", "jsonl", "--verbose"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| process_error("cannot start vlm classify".into(), Some(e)))?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(process_error(
            format!(
                "vlm classify failed on {}: {}",
                dir.display(),
                stderr.trim()
            ),
            None,
        ));
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

/// A 3000x2000 JPEG with smooth gradients and fine texture, about the size of a photo.
fn write_camera_jpeg(path: &Path) -> Result<(), BenchError> {
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
        .map_err(|e| process_error(format!("cannot write {}: {e}", path.display()), None))
}
