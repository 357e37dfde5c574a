//! Where a checkpoint comes from: local directory, registry alias or hub repo.
