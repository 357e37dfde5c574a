//! Image decoding and CLIP preprocessing.
//!
//! Reproduces transformers' `CLIPImageProcessorPil` fed by `load_image`: decode, EXIF
//! transpose, RGB conversion, Pillow resize, centre crop (zero padding when the image is
//! smaller than the crop), rescale, normalise, channel-major `f32` output.
//!
//! One opt-in departure: [`DecodeOptions::jpeg_downscale`] decodes large JPEGs at reduced
//! size in the DCT domain; [`Preprocessor::preprocess_decoded`] then resizes and crops as for
//! the full-size picture.

mod budget;
mod config;
mod decode;
mod error;
mod jpeg;
#[cfg(test)]
mod parity;
mod resize;
mod truncation;

use image::RgbImage;

pub use config::{
    CropRounding, PreprocessConfig, Resample, ResizeTarget, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
};
pub use decode::{
    check_bytes, decode_bytes, decode_bytes_region, decode_bytes_with, decode_file,
    decode_file_region, decode_file_with, DecodeOptions, Decoded, DEFAULT_MAX_PIXELS,
    MAX_JPEG_SCANS,
};
pub use error::PreprocessError;

/// Turns decoded RGB images into the normalised tensors CLIP's vision encoder expects.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    config: PreprocessConfig,
    /// Final value for each 8-bit sample, per channel: rescale and normalise act on samples
    /// independently, so a table reproduces transformers' float arithmetic exactly.
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    /// Builds a preprocessor for `config`.
    pub fn new(config: PreprocessConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = sample_value(&config, c, v as u8);
            }
        }
        Self { config, lut }
    }

    /// The configuration in use.
    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    /// `(height, width)` of every output.
    pub fn output_size(&self) -> (u32, u32) {
        self.config.output_size()
    }

    /// Normalised pixels, channel-major `[3, H, W]` flattened, `f32` — transformers'
    /// `pixel_values` for this image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        let (width, height) = image.dimensions();
        let whole = [0.0, 0.0, f64::from(width), f64::from(height)];
        self.preprocess_region(image, (width, height), whole)
    }

    /// Decodes `bytes` (`origin` names them in errors) with `options` and preprocesses
    /// the image, holding the decoded image's memory reservation until it is done with: so
    /// workers decoding large images at once stay within
    /// [`DecodeOptions::max_memory`] together.
    pub fn preprocess_bytes(
        &self,
        bytes: &[u8],
        origin: &std::path::Path,
        options: &DecodeOptions,
    ) -> Result<Vec<f32>, PreprocessError> {
        let (decoded, _held) = decode::decode_held(bytes, origin, options)?;
        self.preprocess_decoded(&decoded)
    }

    /// [`Self::preprocess`] for an image that may have been decoded at reduced size
    /// ([`DecodeOptions::jpeg_downscale`]): the resize and crop are those of the picture at
    /// full size, so only the reduction's filtering changes the result.
    pub fn preprocess_decoded(&self, decoded: &Decoded) -> Result<Vec<f32>, PreprocessError> {
        self.preprocess_region(decoded.image(), decoded.full_size(), decoded.bounds())
    }

    /// Resizes and crops as for a `width` x `height` picture that lies at `bounds` in `image`.
    fn preprocess_region(
        &self,
        image: &RgbImage,
        (width, height): (u32, u32),
        bounds: [f64; 4],
    ) -> Result<Vec<f32>, PreprocessError> {
        let (w, h) = image.dimensions();
        if width == 0 || height == 0 || w == 0 || h == 0 {
            return Err(PreprocessError::EmptyImage { width, height });
        }
        let cfg = &self.config;
        let (rh, rw) = if cfg.do_resize {
            resized_size(height, width, cfg.size)?
        } else {
            (height, width)
        };
        let (oh, ow) = if cfg.do_center_crop {
            cfg.crop_size
        } else {
            (rh, rw)
        };
        // Configs parsed from JSON are always fixed-size; hand-built ones may not be.
        if (oh, ow) != self.output_size() {
            return Err(PreprocessError::VariableOutputSize {
                expected: self.output_size(),
                got: (oh, ow),
            });
        }
        let ys = crop_axis(rh, oh, cfg.crop_rounding);
        let xs = crop_axis(rw, ow, cfg.crop_rounding);
        let window = resize::resize_box_window(
            image,
            bounds,
            rw,
            rh,
            cfg.resample,
            xs.src..xs.src + xs.len,
            ys.src..ys.src + ys.len,
        );

        let plane = oh as usize * ow as usize;
        let mut out = vec![0f32; 3 * plane];
        for (c, chan) in out.chunks_exact_mut(plane).enumerate() {
            // Padding is a zero sample before rescale/normalise, as in transformers.
            chan.fill(self.lut[c][0]);
        }
        let win_w = xs.len as usize;
        for (r, row) in window.chunks_exact(win_w * 3).enumerate() {
            let y = ys.dst as usize + r;
            let start = y * ow as usize + xs.dst as usize;
            for (c, chan) in out.chunks_exact_mut(plane).enumerate() {
                let lut = &self.lut[c];
                for (o, px) in chan[start..start + win_w]
                    .iter_mut()
                    .zip(row.chunks_exact(3))
                {
                    *o = lut[usize::from(px[c])];
                }
            }
        }
        Ok(out)
    }
}

/// `rescale` (f64 multiply, cast to f32) then `normalize` (f32 subtract and divide), in
/// transformers' order and precisions.
fn sample_value(cfg: &PreprocessConfig, channel: usize, v: u8) -> f32 {
    let mut x = if cfg.divide_by_255 {
        f32::from(v) / 255.0
    } else if cfg.do_rescale {
        (f64::from(v) * cfg.rescale_factor) as f32
    } else {
        f32::from(v)
    };
    if cfg.do_normalize {
        x = (x - cfg.image_mean[channel] as f32) / cfg.image_std[channel] as f32;
    }
    x
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/image_transforms.py#L249
/// Output `(height, width)` of the resize step, as transformers'
/// `get_resize_output_image_size(default_to_square=False)` computes it.
fn resized_size(
    height: u32,
    width: u32,
    target: ResizeTarget,
) -> Result<(u32, u32), PreprocessError> {
    match target {
        ResizeTarget::Exact { height, width } => Ok((height, width)),
        ResizeTarget::ShortestEdge(short_target) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // Python: int(size * long / short); the product is exact in f64 and the
            // division is correctly rounded in both languages.
            let new_long =
                ((u64::from(short_target) * u64::from(long)) as f64 / f64::from(short)) as u64;
            // Pillow stores sizes in C ints.
            let new_long = u32::try_from(new_long)
                .ok()
                .filter(|&n| n <= i32::MAX as u32)
                .ok_or(PreprocessError::TooElongated {
                    width,
                    height,
                    long: new_long,
                })?;
            Ok(if width <= height {
                (new_long, short_target)
            } else {
                (short_target, new_long)
            })
        }
    }
}

/// Where one axis of the centre crop reads from and writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CropAxis {
    /// First resized-image index kept.
    src: u32,
    /// First output index written; the rest is zero padding.
    dst: u32,
    /// Number of indices copied.
    len: u32,
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/image_transforms.py#L448
/// transformers' `center_crop`: offset `(size - crop) // 2` when the image is large enough,
/// otherwise the whole axis placed at `ceil((crop - size) / 2)` in a zero canvas.
/// torchvision (open_clip) rounds the offset half to even instead: `round(margin / 2)`.
fn crop_axis(size: u32, crop: u32, rounding: CropRounding) -> CropAxis {
    if size >= crop {
        let margin = size - crop;
        let src = match rounding {
            CropRounding::Floor => margin / 2,
            // margin / 2 ends in .5 exactly when margin is odd; then round to the even one.
            CropRounding::HalfEven if margin % 2 == 1 && (margin / 2) % 2 == 1 => margin / 2 + 1,
            CropRounding::HalfEven => margin / 2,
        };
        CropAxis {
            src,
            dst: 0,
            len: crop,
        }
    } else {
        CropAxis {
            src: 0,
            dst: (crop - size).div_ceil(2),
            len: size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_follow_python_int_truncation() {
        let se = ResizeTarget::ShortestEdge(224);
        // (height, width) -> (height, width), values from transformers.
        assert_eq!(resized_size(480, 640, se).unwrap(), (224, 298));
        assert_eq!(resized_size(640, 480, se).unwrap(), (298, 224));
        assert_eq!(resized_size(1, 1, se).unwrap(), (224, 224));
        assert_eq!(resized_size(8, 400, se).unwrap(), (224, 11200));
        assert_eq!(resized_size(333, 333, se).unwrap(), (224, 224));
        assert_eq!(resized_size(3, 7, se).unwrap(), (224, 522));
        let exact = ResizeTarget::Exact {
            height: 5,
            width: 9,
        };
        assert_eq!(resized_size(100, 3, exact).unwrap(), (5, 9));
    }

    #[test]
    fn absurd_aspect_ratio_is_refused() {
        let err = resized_size(1, 100_000_000, ResizeTarget::ShortestEdge(224)).unwrap_err();
        assert!(matches!(err, PreprocessError::TooElongated { .. }));
    }

    #[test]
    fn torchvision_crop_rounds_half_to_even() {
        // margin 15: transformers 7, torchvision round(7.5) = 8; margin 13: round(6.5) = 6.
        assert_eq!(crop_axis(45, 30, CropRounding::Floor).src, 7);
        assert_eq!(crop_axis(45, 30, CropRounding::HalfEven).src, 8);
        assert_eq!(crop_axis(43, 30, CropRounding::HalfEven).src, 6);
        assert_eq!(crop_axis(46, 30, CropRounding::HalfEven).src, 8);
    }

    #[test]
    fn crop_axis_offsets_and_padding() {
        assert_eq!(
            crop_axis(298, 224, CropRounding::Floor),
            CropAxis {
                src: 37,
                dst: 0,
                len: 224
            }
        );
        assert_eq!(
            crop_axis(225, 224, CropRounding::Floor),
            CropAxis {
                src: 0,
                dst: 0,
                len: 224
            }
        );
        assert_eq!(
            crop_axis(1, 224, CropRounding::Floor),
            CropAxis {
                src: 0,
                dst: 112,
                len: 1
            }
        );
        assert_eq!(
            crop_axis(8, 5, CropRounding::Floor),
            CropAxis {
                src: 1,
                dst: 0,
                len: 5
            }
        );
        assert_eq!(
            crop_axis(3, 6, CropRounding::Floor),
            CropAxis {
                src: 0,
                dst: 2,
                len: 3
            }
        );
    }

    fn no_resize(crop: (u32, u32)) -> Preprocessor {
        Preprocessor::new(PreprocessConfig {
            do_resize: false,
            crop_size: crop,
            ..PreprocessConfig::default()
        })
    }

    #[test]
    fn small_image_is_centred_on_padding() {
        let p = Preprocessor::new(PreprocessConfig {
            do_resize: false,
            do_rescale: false,
            do_normalize: false,
            crop_size: (3, 4),
            ..PreprocessConfig::default()
        });
        let img = RgbImage::from_pixel(1, 2, image::Rgb([9, 8, 7]));
        let out = p.preprocess(&img).unwrap();
        // Height 2 in 3: placed at row ceil(1/2) = 1; width 1 in 4: at column ceil(3/2) = 2.
        let red: Vec<f32> = out[..12].to_vec();
        #[rustfmt::skip]
        assert_eq!(red, [0., 0., 0., 0.,
                         0., 0., 9., 0.,
                         0., 0., 9., 0.]);
        assert_eq!(out[12 + 6], 8.0);
        assert_eq!(out[24 + 10], 7.0);
    }

    #[test]
    fn normalisation_matches_transformers_float_order() {
        let p = no_resize((1, 1));
        let img = RgbImage::from_pixel(1, 1, image::Rgb([0, 128, 255]));
        let out = p.preprocess(&img).unwrap();
        // numpy: ((np.float64(v) * (1/255)).astype(f32) - f32(mean)) / f32(std)
        assert_eq!(out, [-1.792_262_6, 0.168_897_32, 2.145_897]);
        assert_eq!(p.output_size(), (1, 1));
    }

    #[test]
    fn padding_normalises_a_zero_sample() {
        let p = no_resize((2, 2));
        let out = p
            .preprocess(&RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0])))
            .unwrap();
        assert!(out
            .iter()
            .step_by(4)
            .all(|&v| v == out[0] || v == out[4] || v == out[8]));
        assert_eq!(out[0], -1.792_262_6);
    }

    #[test]
    fn hand_built_variable_size_config_is_refused() {
        let p = Preprocessor::new(PreprocessConfig {
            do_center_crop: false,
            ..PreprocessConfig::default()
        });
        let err = p.preprocess(&RgbImage::new(20, 10)).unwrap_err();
        assert!(matches!(
            err,
            PreprocessError::VariableOutputSize {
                got: (224, 448),
                ..
            }
        ));
    }

    #[test]
    fn empty_image_is_an_error() {
        let p = Preprocessor::new(PreprocessConfig::default());
        assert!(matches!(
            p.preprocess(&RgbImage::new(0, 3)),
            Err(PreprocessError::EmptyImage { .. })
        ));
    }
}
