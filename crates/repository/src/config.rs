//! The repository config object (format §4).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Chunker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always `fastcdc-v2020` in v1.
    pub algorithm: ChunkerAlgorithm,
    /// Minimum chunk size.
    pub min_size: u32,
    /// Average chunk size.
    pub avg_size: u32,
    /// Maximum chunk size.
    pub max_size: u32,
    /// FastCDC normalization level, 0–3.
    pub normalization: u8,
}

/// The only chunker of v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    /// FastCDC, 2020 paper.
    #[serde(rename = "fastcdc-v2020")]
    FastCdcV2020,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            algorithm: ChunkerAlgorithm::FastCdcV2020,
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
            normalization: 2,
        }
    }
}

impl ChunkerParams {
    /// Checks the sizes against what FastCDC accepts.
    ///
    /// # Errors
    /// `Invalid` describing the bad value.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let (min, avg, max) =
            (self.min_size as usize, self.avg_size as usize, self.max_size as usize);
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!("chunker parameters out of range: {self:?}")))
        }
    }

    pub(crate) fn level(&self) -> fastcdc::v2020::Normalization {
        use fastcdc::v2020::Normalization as N;
        match self.normalization {
            0 => N::Level0,
            1 => N::Level1,
            2 => N::Level2,
            _ => N::Level3,
        }
    }
}

/// Compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionParams {
    /// Always `zstd` in v1.
    pub algorithm: CompressionAlgorithm,
    /// zstd level; 0 disables compression.
    pub level: i32,
}

/// The compression algorithm name (only `zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompressionAlgorithm {
    /// zstd.
    #[serde(rename = "zstd")]
    Zstd,
}

impl Default for CompressionParams {
    fn default() -> Self {
        Self { algorithm: CompressionAlgorithm::Zstd, level: 3 }
    }
}

/// The `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version: 2 for new repositories, 1 for those made before compression dictionaries.
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Compression.
    pub compression: CompressionParams,
}

/// Default target pack size: 32 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 32 * 1024 * 1024;
