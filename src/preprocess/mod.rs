//! Image decoding and CLIP preprocessing (owned by the preprocessing work).
