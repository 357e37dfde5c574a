//! Reading safetensors weights straight into the tensors' own buffers.
//!
//! candle's memory-mapped reader copies every tensor out of the mapping, so a load touches
//! each weight twice (the mapped page, then the copy) and the process holds both: about
//! 1.2 GB resident for a 600 MB checkpoint, and most of a cold start spent in page faults.
//! Here the header is validated through a mapping (only its first pages are touched) and
//! each tensor is read with one positioned read into the buffer the tensor then owns:
//! one copy out of the page cache, half the memory, and large buffers on huge pages.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use safetensors::tensor::{Dtype as StoredDtype, SafeTensors, TensorInfo};

/// An open safetensors file whose header has been checked.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    file: File,
    /// Where the tensor data starts: after the 8-byte length and the JSON header.
    data_start: u64,
    tensors: HashMap<String, TensorInfo>,
    /// Tensors read ahead by [`Self::read_all`], taken out as the model asks for them.
    ready: std::sync::Mutex<HashMap<String, candle_core::Result<Tensor>>>,
}

impl SafetensorsFile {
    /// Opens `path` and validates its header against the file's length: offsets inside the
    /// file, sizes matching shapes and dtypes, no gaps or overlaps.
    pub fn open(path: &Path) -> candle_core::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and dropped before this function returns; like
        // every mmap reader we rely on the file not being truncated meanwhile.
        let mapping = unsafe { memmap2::Mmap::map(&file)? };
        let (header_len, metadata) = SafeTensors::read_metadata(&mapping)
            .map_err(|e| candle_core::Error::Msg(format!("not a valid safetensors file: {e}")))?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start: 8 + header_len as u64,
            tensors,
            ready: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Reads every tensor now, on all cores: most of a load is the kernel zeroing and
    /// filling fresh pages, which parallelises. Errors are kept until the tensor is asked
    /// for, so a broken tensor the model never uses costs nothing.
    pub fn read_all(self) -> Self {
        use rayon::prelude::*;
        let mut names: Vec<&String> = self.tensors.keys().collect();
        // Largest first, so the threads finish together.
        names.sort_by_key(|name| {
            let (start, end) = self.tensors[*name].data_offsets;
            std::cmp::Reverse(end - start)
        });
        let read: HashMap<String, candle_core::Result<Tensor>> = names
            .into_par_iter()
            .map(|name| (name.clone(), self.read(name)))
            .collect();
        if let Ok(mut ready) = self.ready.lock() {
            *ready = read;
        }
        self
    }

    /// A tensor read ahead, or read now.
    fn take(&self, name: &str) -> candle_core::Result<Tensor> {
        let ready = self.ready.lock().ok().and_then(|mut r| r.remove(name));
        ready.unwrap_or_else(|| self.read(name))
    }

    /// Reads one tensor onto the CPU in its stored floating-point type.
    fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let Some(info) = self.tensors.get(name) else {
            candle_core::bail!("cannot find tensor `{name}`")
        };
        let shape = Shape::from_dims(&info.shape);
        let offset = self.data_start + info.data_offsets.0 as u64;
        let count = shape.elem_count();
        match info.dtype {
            StoredDtype::F32 => {
                let mut values = self.read_elements::<f32>(offset, count)?;
                if cfg!(target_endian = "big") {
                    values
                        .iter_mut()
                        .for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
                }
                Tensor::from_vec(values, shape, &Device::Cpu)
            }
            StoredDtype::F16 => {
                let bits = self.read_elements::<u16>(offset, count)?;
                let values = bits
                    .into_iter()
                    .map(|b| half::f16::from_bits(u16::from_le(b)))
                    .collect::<Vec<_>>();
                Tensor::from_vec(values, shape, &Device::Cpu)
            }
            StoredDtype::BF16 => {
                let bits = self.read_elements::<u16>(offset, count)?;
                let values = bits
                    .into_iter()
                    .map(|b| half::bf16::from_bits(u16::from_le(b)))
                    .collect::<Vec<_>>();
                Tensor::from_vec(values, shape, &Device::Cpu)
            }
            StoredDtype::F64 => {
                let mut values = self.read_elements::<f64>(offset, count)?;
                if cfg!(target_endian = "big") {
                    values
                        .iter_mut()
                        .for_each(|v| *v = f64::from_bits(v.to_bits().swap_bytes()));
                }
                Tensor::from_vec(values, shape, &Device::Cpu)
            }
            stored => candle_core::bail!(
                "tensor `{name}` is stored as {stored:?}, but weights must be floating point"
            ),
        }
    }

    /// Reads `count` plain numbers of type `T` at `offset` into a new buffer.
    fn read_elements<T: Plain>(&self, offset: u64, count: usize) -> candle_core::Result<Vec<T>> {
        read_plain(&self.file, offset, count).map_err(|e| {
            candle_core::Error::Msg(format!(
                "cannot read {} bytes at offset {offset} of {}: {e}",
                count * std::mem::size_of::<T>(),
                self.path.display()
            ))
        })
    }
}

/// Reads `count` plain numbers of type `T` at `offset` of `file` into a new buffer.
fn read_plain<T: Plain>(file: &File, offset: u64, count: usize) -> std::io::Result<Vec<T>> {
    // Zeroed, not merely reserved: the read writes through a `&mut [u8]`, which must not
    // cover uninitialised memory. A large zeroed buffer comes from the kernel's zero pages
    // (calloc), so this costs no extra pass over it.
    let mut values: Vec<T> = vec![T::ZERO; count];
    let raw = as_bytes_mut(&mut values);
    advise_huge_pages(raw.as_mut_ptr(), raw.len());
    read_exact_at(file, raw, offset)?;
    Ok(values)
}

/// Number types that any bit pattern of their size is a valid value of, without padding.
trait Plain: Copy {
    const ZERO: Self;
}
impl Plain for f32 {
    const ZERO: Self = 0.0;
}
impl Plain for f64 {
    const ZERO: Self = 0.0;
}
impl Plain for u16 {
    const ZERO: Self = 0;
}

/// The bytes of `values`, to be overwritten.
fn as_bytes_mut<T: Plain>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: `values` is initialised; `T` has no padding and accepts any bit pattern, so
    // every byte written through the slice leaves valid values; the slice covers exactly
    // `values`' memory and borrows it mutably for as long as it lives.
    unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(values),
        )
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Asks Linux to back a large buffer with 2 MiB pages: a 600 MB load then takes hundreds
/// of page faults instead of hundreds of thousands. Only advice: failure changes nothing.
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) & !(HUGE - 1);
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE
        // changes how pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}

/// Reads `name` through `backend` unchecked, then checks that it has the `shape` the towers
/// ask for: the one shape check of every weights backend (a weights file, open_clip's
/// renamed state dict, a pack file), whose `get` is this.
pub(crate) fn get_checked(
    backend: &(impl SimpleBackend + ?Sized),
    shape: Shape,
    name: &str,
    dtype: DType,
    device: &Device,
    source: &str,
) -> candle_core::Result<Tensor> {
    let tensor = backend.get_unchecked(name, dtype, device)?;
    if tensor.shape() != &shape {
        candle_core::bail!(
            "tensor `{name}` has shape {:?} in {source}, but the model's config implies {:?}",
            tensor.dims(),
            shape.dims()
        );
    }
    Ok(tensor)
}

impl SimpleBackend for SafetensorsFile {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        get_checked(self, shape, name, dtype, device, "the weights file")
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.take(name)?.to_dtype(dtype)?.to_device(device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn reads_every_float_type_as_stored_and_converts_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let values =
            Tensor::new(&[[1.5f32, -2.25, 3.0], [0.5, 7.0, -0.125]], &Device::Cpu).unwrap();
        write(
            &path,
            &[
                ("a", values.clone()),
                ("b", values.to_dtype(DType::F16).unwrap()),
                ("c", values.to_dtype(DType::BF16).unwrap()),
                ("d", values.to_dtype(DType::F64).unwrap()),
            ],
        );
        let file = SafetensorsFile::open(&path).unwrap();
        for name in ["a", "b", "c", "d"] {
            let t = file
                .get(
                    (2, 3).into(),
                    name,
                    Init::Const(0.),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap();
            assert_eq!(
                t.to_vec2::<f32>().unwrap(),
                values.to_vec2::<f32>().unwrap()
            );
        }
        assert_eq!(file.read("b").unwrap().dtype(), DType::F16);
        assert!(file.contains_tensor("a") && !file.contains_tensor("z"));
    }

    #[test]
    fn wrong_shapes_integers_and_missing_tensors_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let ids = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
        let floats = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        write(&path, &[("ids", ids), ("x", floats)]);
        let file = SafetensorsFile::open(&path).unwrap();
        let get = |name, shape: Shape| {
            file.get(shape, name, Init::Const(0.), DType::F32, &Device::Cpu)
                .unwrap_err()
                .to_string()
        };
        assert!(get("ids", 3.into()).contains("stored as I64"));
        assert!(get("x", 3.into()).contains("shape [2]"));
        assert!(get("nope", 3.into()).contains("cannot find tensor `nope`"));
    }

    /// The one unsafe step of a load, small enough for Miri (which checks that the bytes
    /// read into are initialised): `cargo +nightly miri test --lib model::weights::tests::plain`.
    #[test]
    fn plain_numbers_are_read_in_place() {
        let path = std::env::temp_dir().join(format!("vlm-plain-{}", std::process::id()));
        let values = [1.5f32, -2.0, 0.25];
        let mut bytes = vec![7u8; 3];
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let read: Vec<f32> = read_plain(&file, 3, 3).unwrap();
        let halves: Vec<u16> = read_plain(&file, 3, 2).unwrap();
        let short = read_plain::<f64>(&file, 3, 2);
        drop(file);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read, values);
        assert_eq!(halves, [0, u16::from_le_bytes([0xc0, 0x3f])]);
        assert!(short.is_err(), "reading past the end is an error");
    }

    #[test]
    fn truncated_files_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write(
            &path,
            &[("x", Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap())],
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert!(SafetensorsFile::open(&path).is_err());
    }
}
