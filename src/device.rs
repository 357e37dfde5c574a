//! Choosing where the model runs.

use candle_core::Device;

/// A requested compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The first GPU this build supports, else the CPU.
    Auto,
    Cpu,
    Cuda,
    Metal,
}

/// Why the requested device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("this vlm was built without {feature} support; rebuild with `cargo install vlm --features {feature}` or use --device cpu")]
    NotBuilt { feature: &'static str },
    #[error("cannot open the {kind} device: {cause}; check the driver or use --device cpu")]
    Open {
        kind: &'static str,
        cause: candle_core::Error,
    },
}

/// Opens the device; `Auto` falls back to the CPU silently.
pub fn select(kind: DeviceKind) -> Result<Device, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok(device);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(device) = Device::new_metal(0) {
                    return Ok(device);
                }
            }
            Ok(Device::Cpu)
        }
        DeviceKind::Cuda if !candle_core::utils::cuda_is_available() => {
            Err(DeviceError::NotBuilt { feature: "cuda" })
        }
        DeviceKind::Cuda => Device::new_cuda(0).map_err(|source| DeviceError::Open {
            kind: "CUDA",
            cause: source,
        }),
        DeviceKind::Metal if !candle_core::utils::metal_is_available() => {
            Err(DeviceError::NotBuilt { feature: "metal" })
        }
        DeviceKind::Metal => Device::new_metal(0).map_err(|source| DeviceError::Open {
            kind: "Metal",
            cause: source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_always_work() {
        assert!(select(DeviceKind::Cpu).unwrap().is_cpu());
        assert!(select(DeviceKind::Auto).is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = select(DeviceKind::Cuda).unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
