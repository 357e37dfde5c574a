//! TEMP STUB
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct PreprocessError;
pub struct PreprocessConfig;
impl PreprocessConfig {
    pub fn from_file(_p: &Path) -> Result<Self, PreprocessError> {
        Err(PreprocessError)
    }
    pub fn output_size(&self) -> (u32, u32) {
        (0, 0)
    }
}
pub struct Preprocessor;
impl Preprocessor {
    pub fn new(_c: PreprocessConfig) -> Self {
        Self
    }
    pub fn preprocess(&self, _i: &image::RgbImage) -> Result<Vec<f32>, PreprocessError> {
        Err(PreprocessError)
    }
}
pub fn decode_file(_p: &Path) -> Result<image::RgbImage, PreprocessError> {
    Err(PreprocessError)
}
