//! `preprocessor_config.json` parsing with the defaults of the image processor the file
//! names: `CLIPImageProcessorPil`'s, or `SiglipImageProcessorPil`'s for SigLIP (squash to
//! 224x224, no centre crop, mean and std 0.5).

use std::path::Path;

use serde_json::Value;

use super::error::PreprocessError;
use crate::fields::{FieldError, Fields};

/// `OPENAI_CLIP_MEAN` from `transformers.image_utils`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// `OPENAI_CLIP_STD` from `transformers.image_utils`.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Resampling filter, numbered as PIL's `Image.Resampling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// PIL 0.
    Nearest,
    /// PIL 1.
    Lanczos,
    /// PIL 2.
    Bilinear,
    /// PIL 3; CLIP's default.
    Bicubic,
    /// PIL 4.
    Box,
    /// PIL 5.
    Hamming,
}

impl Resample {
    /// Maps PIL's integer code; `None` for codes vlm does not implement.
    pub fn from_pil(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    /// PIL's integer code for this filter.
    pub fn pil_code(self) -> u8 {
        match self {
            Self::Nearest => 0,
            Self::Lanczos => 1,
            Self::Bilinear => 2,
            Self::Bicubic => 3,
            Self::Box => 4,
            Self::Hamming => 5,
        }
    }
}

/// Target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so the shorter side equals this, keeping the aspect ratio (`{"shortest_edge": n}`).
    ShortestEdge(u32),
    /// Resize to exactly this size (`{"height": h, "width": w}`).
    Exact { height: u32, width: u32 },
}

/// How the centre crop places its window when the margin is odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropRounding {
    /// transformers' `center_crop`: offset `(size - crop) // 2`.
    Floor,
    /// torchvision's `center_crop` (open_clip): offset `int(round((size - crop) / 2.0))`,
    /// Python's round half to even; one pixel further whenever `(size - crop) mod 4 == 3`.
    HalfEven,
}

/// Parsed `preprocessor_config.json`, with the image processor's defaults for missing keys.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub do_resize: bool,
    pub size: ResizeTarget,
    pub resample: Resample,
    pub do_center_crop: bool,
    /// `(height, width)`.
    pub crop_size: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// Parsed for completeness; decoding always yields RGB, which is what `true` gives.
    pub do_convert_rgb: bool,
    /// Where the centre crop starts on an odd margin (transformers: floor).
    pub crop_rounding: CropRounding,
    /// Rescale by dividing by 255 in f32 (torchvision's `ToTensor`, open_clip) instead of
    /// transformers' f64 multiply by `rescale_factor`.
    pub divide_by_255: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: ResizeTarget::ShortestEdge(224),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
            crop_rounding: CropRounding::Floor,
            divide_by_255: false,
        }
    }
}

impl PreprocessConfig {
    /// `SiglipImageProcessorPil`'s defaults (transformers 5.23.0
    /// `image_processing_pil_siglip.py`): squash to 224x224 bicubic, no centre crop,
    /// mean and std 0.5.
    pub fn siglip_defaults() -> Self {
        Self {
            size: ResizeTarget::Exact {
                height: 224,
                width: 224,
            },
            do_center_crop: false,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ..Self::default()
        }
    }
}

impl PreprocessConfig {
    /// `BlipImageProcessorPil`'s defaults (transformers 5.23.0
    /// `image_processing_pil_blip.py`): squash to 384x384 bicubic, no centre crop, CLIP's
    /// mean and std.
    pub fn blip_defaults() -> Self {
        Self {
            size: ResizeTarget::Exact {
                height: 384,
                width: 384,
            },
            do_center_crop: false,
            ..Self::default()
        }
    }

    /// Reads and parses a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, PreprocessError> {
        let text = std::fs::read_to_string(path).map_err(|source| PreprocessError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON; `origin` names the file in errors.
    pub fn from_json_str(s: &str, origin: &Path) -> Result<Self, PreprocessError> {
        let value: Value =
            serde_json::from_str(s).map_err(|source| PreprocessError::ConfigJson {
                path: origin.to_path_buf(),
                cause: source,
            })?;
        if !value.is_object() {
            return Err(PreprocessError::ConfigJson {
                path: origin.to_path_buf(),
                cause: serde::de::Error::custom("the top level is not a JSON object"),
            });
        }
        let fields = Fields::root(&value, origin)?;
        let kind = fields.str("image_processor_type").unwrap_or_default();
        if kind.starts_with("Siglip2") {
            return Err(fields
                .error(
                    "image_processor_type",
                    format!("is {kind:?}, SigLIP 2 NaFlex's variable-resolution processor, which vlm does not support yet"),
                )
                .into());
        }
        let defaults = if kind.starts_with("Siglip") {
            Self::siglip_defaults()
        } else if kind.starts_with("Blip") {
            Self::blip_defaults()
        } else {
            Self::default()
        };
        let config = Self {
            do_resize: fields.bool("do_resize")?.unwrap_or(defaults.do_resize),
            size: size(&fields)?.unwrap_or(defaults.size),
            resample: resample(&fields)?.unwrap_or(defaults.resample),
            do_center_crop: fields
                .bool("do_center_crop")?
                .unwrap_or(defaults.do_center_crop),
            crop_size: crop_size(&fields)?.unwrap_or(defaults.crop_size),
            do_rescale: fields.bool("do_rescale")?.unwrap_or(defaults.do_rescale),
            rescale_factor: fields
                .number("rescale_factor")?
                .unwrap_or(defaults.rescale_factor),
            do_normalize: fields
                .bool("do_normalize")?
                .unwrap_or(defaults.do_normalize),
            image_mean: fields.triple("image_mean")?.unwrap_or(defaults.image_mean),
            image_std: fields.triple("image_std")?.unwrap_or(defaults.image_std),
            do_convert_rgb: fields
                .bool("do_convert_rgb")?
                .unwrap_or(defaults.do_convert_rgb),
            crop_rounding: CropRounding::Floor,
            divide_by_255: false,
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// `(height, width)` of every preprocessed image.
    pub fn output_size(&self) -> (u32, u32) {
        match (self.do_center_crop, self.do_resize, self.size) {
            (true, _, _) => self.crop_size,
            (false, true, ResizeTarget::Exact { height, width }) => (height, width),
            // `validate` rejects the remaining, image-dependent cases.
            _ => self.crop_size,
        }
    }

    /// Fewest pixels the resize step leaves along either side of an image, or `None` when
    /// it does not resize: a decoder may shrink an image beforehand as long as it stays well
    /// above this. An exact resize counts its larger side, so each axis is covered.
    pub fn resize_side(&self) -> Option<u32> {
        match (self.do_resize, self.size) {
            (false, _) => None,
            (true, ResizeTarget::ShortestEdge(side)) => Some(side),
            (true, ResizeTarget::Exact { height, width }) => Some(height.max(width)),
        }
    }

    fn validate(&self, origin: &Path) -> Result<(), PreprocessError> {
        let field_err = |field: &str, reason: String| PreprocessError::ConfigField {
            path: origin.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        // The encoders need one fixed input size; without a crop or an exact resize the
        // output size would depend on each image.
        let fixed = self.do_center_crop
            || (self.do_resize && matches!(self.size, ResizeTarget::Exact { .. }));
        if !fixed {
            return Err(field_err(
                "do_center_crop",
                "is false and `size` is not {\"height\", \"width\"}, so output sizes would vary \
                 per image; vlm needs a fixed input size"
                    .into(),
            ));
        }
        if let Some(i) = self
            .image_std
            .iter()
            .position(|&s| s == 0.0 || !s.is_finite())
        {
            return Err(field_err(
                "image_std",
                format!(
                    "has entry {i} = {}, which cannot be divided by",
                    self.image_std[i]
                ),
            ));
        }
        if !self.rescale_factor.is_finite() {
            return Err(field_err("rescale_factor", "is not finite".into()));
        }
        Ok(())
    }
}

impl From<FieldError> for PreprocessError {
    fn from(error: FieldError) -> Self {
        Self::ConfigField {
            path: error.path,
            field: error.field,
            reason: error.problem,
        }
    }
}

/// `resample`: one of PIL's filter numbers.
fn resample(fields: &Fields) -> Result<Option<Resample>, FieldError> {
    let Some(v) = fields.get("resample") else {
        return Ok(None);
    };
    v.as_i64()
        .and_then(Resample::from_pil)
        .map(Some)
        .ok_or_else(|| {
            fields.error(
                "resample",
                format!(
                    "is {v}; vlm supports PIL filters 0 (nearest), 1 (lanczos), \
                     2 (bilinear), 3 (bicubic), 4 (box) and 5 (hamming)"
                ),
            )
        })
}

/// `size`: an int means shortest edge (CLIP sets `default_to_square = False`); a 2-list is
/// `[h, w]`.
fn size(fields: &Fields) -> Result<Option<ResizeTarget>, FieldError> {
    const KEY: &str = "size";
    let Some(v) = fields.get(KEY) else {
        return Ok(None);
    };
    let positive = |v: &Value| fields.positive_in(KEY, v);
    match v {
        Value::Number(_) => Ok(Some(ResizeTarget::ShortestEdge(positive(v)?))),
        Value::Array(a) if a.len() == 2 => Ok(Some(ResizeTarget::Exact {
            height: positive(&a[0])?,
            width: positive(&a[1])?,
        })),
        Value::Object(m) => {
            let present: Vec<&str> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k.as_str())
                .collect();
            match present.as_slice() {
                ["shortest_edge"] => Ok(Some(ResizeTarget::ShortestEdge(positive(
                    &m["shortest_edge"],
                )?))),
                ["height", "width"] | ["width", "height"] => Ok(Some(ResizeTarget::Exact {
                    height: positive(&m["height"])?,
                    width: positive(&m["width"])?,
                })),
                _ => Err(fields.error(
                    KEY,
                    format!(
                        "has keys {present:?}; vlm supports {{\"shortest_edge\"}} or \
                         {{\"height\", \"width\"}}"
                    ),
                )),
            }
        }
        _ => Err(fields.error(
            KEY,
            format!("must be an integer, [height, width] or an object, found {v}"),
        )),
    }
}

/// `crop_size`: an int, `[height, width]` or `{"height", "width"}`.
fn crop_size(fields: &Fields) -> Result<Option<(u32, u32)>, FieldError> {
    const KEY: &str = "crop_size";
    let Some(v) = fields.get(KEY) else {
        return Ok(None);
    };
    let positive = |v: &Value| fields.positive_in(KEY, v);
    match v {
        Value::Number(_) => {
            let n = positive(v)?;
            Ok(Some((n, n)))
        }
        Value::Array(a) if a.len() == 2 => Ok(Some((positive(&a[0])?, positive(&a[1])?))),
        Value::Object(m) => match (m.get("height"), m.get("width")) {
            (Some(h), Some(w)) => Ok(Some((positive(h)?, positive(w)?))),
            _ => Err(fields.error(KEY, "must have \"height\" and \"width\" keys")),
        },
        _ => Err(fields.error(
            KEY,
            format!("must be an integer, [height, width] or an object, found {v}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PreprocessConfig, PreprocessError> {
        PreprocessConfig::from_json_str(s, Path::new("cfg/preprocessor_config.json"))
    }

    #[test]
    fn empty_object_takes_clip_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c, PreprocessConfig::default());
        assert_eq!(c.size, ResizeTarget::ShortestEdge(224));
        assert_eq!(c.resample, Resample::Bicubic);
        assert_eq!(c.output_size(), (224, 224));
    }

    #[test]
    fn openai_style_config_parses() {
        let c = parse(
            r#"{"crop_size": 336, "do_center_crop": true, "do_normalize": true,
                "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3, "size": 336}"#,
        )
        .unwrap();
        assert_eq!(c.size, ResizeTarget::ShortestEdge(336));
        assert_eq!(c.crop_size, (336, 336));
        assert_eq!(c.output_size(), (336, 336));
    }

    #[test]
    fn dict_sizes_and_scalar_mean() {
        let c = parse(
            r#"{"size": {"height": 10, "width": 20}, "crop_size": {"height": 8, "width": 6},
                "do_center_crop": false, "image_mean": 0.5, "resample": 2,
                "rescale_factor": 0.00392156862745098}"#,
        )
        .unwrap();
        assert_eq!(
            c.size,
            ResizeTarget::Exact {
                height: 10,
                width: 20
            }
        );
        assert_eq!(c.output_size(), (10, 20));
        assert_eq!(c.image_mean, [0.5; 3]);
        assert_eq!(c.resample, Resample::Bilinear);
        // Must equal Python's float exactly, or rescaled pixels could differ in the last bit.
        assert_eq!(c.rescale_factor.to_bits(), (1.0f64 / 255.0).to_bits());
    }

    #[test]
    fn blip_files_get_blip_defaults_without_a_crop() {
        // Salesforce's files list no do_center_crop: BlipImageProcessor has none, so the
        // image is squashed to `size` (384x384 when the file says nothing).
        let c = parse(r#"{"image_processor_type": "BlipImageProcessor", "resample": 3}"#).unwrap();
        assert!(!c.do_center_crop);
        assert_eq!(c.output_size(), (384, 384));
        assert_eq!(c.image_mean, OPENAI_CLIP_MEAN);
    }

    #[test]
    fn null_means_default() {
        let c = parse(r#"{"crop_size": null, "resample": null}"#).unwrap();
        assert_eq!(c.crop_size, (224, 224));
        assert_eq!(c.resample, Resample::Bicubic);
    }

    fn field_of(err: PreprocessError) -> String {
        match &err {
            PreprocessError::ConfigField { field, path, .. } => {
                assert!(err.to_string().contains(&path.display().to_string()));
                field.clone()
            }
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn unusable_values_name_the_field() {
        assert_eq!(
            field_of(parse(r#"{"resample": 7}"#).unwrap_err()),
            "resample"
        );
        assert_eq!(
            field_of(parse(r#"{"resample": "bicubic"}"#).unwrap_err()),
            "resample"
        );
        assert_eq!(
            field_of(parse(r#"{"do_resize": 1}"#).unwrap_err()),
            "do_resize"
        );
        assert_eq!(field_of(parse(r#"{"size": -3}"#).unwrap_err()), "size");
        assert_eq!(
            field_of(parse(r#"{"size": {"longest_edge": 9}}"#).unwrap_err()),
            "size"
        );
        assert_eq!(
            field_of(parse(r#"{"crop_size": "big"}"#).unwrap_err()),
            "crop_size"
        );
        assert_eq!(
            field_of(parse(r#"{"image_mean": [1, 2]}"#).unwrap_err()),
            "image_mean"
        );
        assert_eq!(
            field_of(parse(r#"{"image_std": [1, 0, 1]}"#).unwrap_err()),
            "image_std"
        );
        assert_eq!(
            field_of(parse(r#"{"do_center_crop": false}"#).unwrap_err()),
            "do_center_crop"
        );
    }

    #[test]
    fn malformed_json_is_reported_with_the_file() {
        let err = parse("{not json").unwrap_err();
        assert!(matches!(err, PreprocessError::ConfigJson { .. }));
        assert!(err.to_string().contains("cfg/preprocessor_config.json"));
        assert!(matches!(
            parse("[1]").unwrap_err(),
            PreprocessError::ConfigJson { .. }
        ));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = PreprocessConfig::from_file(Path::new("/nonexistent/vlm/cfg.json")).unwrap_err();
        assert!(matches!(err, PreprocessError::Read { .. }));
    }

    #[test]
    fn siglip_processors_take_siglip_defaults() {
        let config = PreprocessConfig::from_json_str(
            r#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}}"#,
            Path::new("p.json"),
        )
        .expect("parses");
        assert!(!config.do_center_crop);
        assert_eq!(config.output_size(), (384, 384));
        assert_eq!(config.image_mean, [0.5; 3]);
        assert_eq!(config.resample, Resample::Bicubic);
        let err = PreprocessConfig::from_json_str(
            r#"{"image_processor_type": "Siglip2ImageProcessorFast"}"#,
            Path::new("p.json"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("NaFlex"), "{err}");
    }

    #[test]
    fn resize_side_for_downscaled_decoding() {
        assert_eq!(PreprocessConfig::default().resize_side(), Some(224));
        let exact = PreprocessConfig {
            size: ResizeTarget::Exact {
                height: 10,
                width: 20,
            },
            ..PreprocessConfig::default()
        };
        assert_eq!(exact.resize_side(), Some(20));
        let none = PreprocessConfig {
            do_resize: false,
            ..PreprocessConfig::default()
        };
        assert_eq!(none.resize_side(), None);
    }
}
