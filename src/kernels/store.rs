//! Where a packed matrix's values live: a buffer of its own (packed at load), or a region
//! of a memory-mapped pack file (packed by an earlier run), read in place.

use std::sync::Arc;

/// Number types a pack file stores, for which every bit pattern is a valid value.
pub(crate) trait Plain: Copy + Send + Sync + 'static {}
impl Plain for f32 {}
impl Plain for u16 {}
impl Plain for i8 {}

/// The values of a packed matrix.
pub(crate) enum Store<T: Plain> {
    /// Packed in this process.
    Owned(Vec<T>),
    /// `len` values at byte `offset` of a mapped file, checked in bounds and aligned when
    /// made ([`Store::mapped`]).
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

impl<T: Plain> Store<T> {
    /// `len` values at byte `offset` of `map`; None when the region leaves the mapping or
    /// is not aligned for `T`.
    pub fn mapped(map: Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>());
        (end <= map.len() && aligned).then_some(Store::Mapped { map, offset, len })
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            // SAFETY: bounds and alignment were checked in `mapped`; `T` accepts any bit
            // pattern; the mapping lives as long as `self` (the Arc). The file is never
            // written in place (pack files are replaced by rename), so it does not change
            // under the mapping unless someone edits it by hand, as with any mapped file.
            Store::Mapped { map, offset, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset).cast::<T>(), *len)
            },
        }
    }

    /// The values as little-endian bytes, for writing a pack file.
    pub fn as_bytes(&self) -> &[u8] {
        let values = self.as_slice();
        // SAFETY: plain numbers have no padding; the pack format is little-endian and the
        // pack key records the byte order, so a big-endian host never reads these back.
        unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Owned(v) => write!(f, "Owned({} values)", v.len()),
            Store::Mapped { offset, len, .. } => write!(f, "Mapped({len} values at {offset})"),
        }
    }
}
