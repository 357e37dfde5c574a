//! Stands in for `database.rs` in a build without the `postgres` feature: every entry
//! says how to get a build that has it.

use std::time::Instant;

use super::{Found, Session};
use vlm::inputs::Input;
use vlm::output::ImageReport;
use vlm::store::{Address, AddressError};

/// A search hit (never made in this build).
pub struct PgHit {
    pub path: String,
    pub similarity: f32,
}

pub fn embed_to(_: &Address, _: &Session, _: Found, _: bool, _: Instant) -> anyhow::Result<u8> {
    Err(AddressError::NotBuilt.into())
}

pub fn search_in(
    _: &Address,
    _: &Session,
    _: &[f32],
    _: usize,
    _: Option<&str>,
) -> anyhow::Result<Vec<PgHit>> {
    Err(AddressError::NotBuilt.into())
}

/// Never opened in this build.
pub enum LabelStore {}

impl LabelStore {
    pub fn open(_: &Address, _: &Session) -> anyhow::Result<Self> {
        Err(AddressError::NotBuilt.into())
    }

    pub fn store(&mut self, _: &[(&Input, &ImageReport, &[f32])]) -> anyhow::Result<()> {
        match *self {}
    }
}
