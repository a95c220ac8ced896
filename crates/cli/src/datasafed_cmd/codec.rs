//! datasafed's compression names (kopia's), their format families, and the codecs holdfast
//! implements (the zstd family).

use std::io::{Read, Write};

use anyhow::bail;

/// Every algorithm name datasafed accepts for `push -z` / `pull -d` (kopia's compressor names).
pub const ALGORITHMS: [&str; 18] = [
    "deflate-best-compression",
    "deflate-best-speed",
    "deflate-default",
    "gzip",
    "gzip-best-compression",
    "gzip-best-speed",
    "lz4",
    "pgzip",
    "pgzip-best-compression",
    "pgzip-best-speed",
    "s2-better",
    "s2-default",
    "s2-parallel-4",
    "s2-parallel-8",
    "zstd",
    "zstd-best-compression",
    "zstd-better-compression",
    "zstd-fastest",
];

/// Algorithms whose output any decoder of the family reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Zstd,
    Gzip,
    Deflate,
    Lz4,
    S2,
}

/// The format family of an algorithm name.
pub fn family(name: &str) -> Family {
    if name.starts_with("zstd") {
        Family::Zstd
    } else if name.starts_with("gzip") || name.starts_with("pgzip") {
        Family::Gzip
    } else if name.starts_with("deflate") {
        Family::Deflate
    } else if name.starts_with("lz4") {
        Family::Lz4
    } else {
        Family::S2
    }
}

/// zstd levels close to klauspost's speed presets that datasafed's names select.
fn zstd_level(name: &str) -> i32 {
    match name {
        "zstd-fastest" => 1,
        "zstd-better-compression" => 7,
        "zstd-best-compression" => 11,
        _ => 3,
    }
}

/// What `pull` does to the stored plain bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullPlan {
    /// Write them as they are.
    Plain,
    /// Compress them with this algorithm (pushed with `-z`, pulled without `-d`).
    Encode(String),
    /// Decompress them with this algorithm (pushed without `-z`, pulled with `-d`).
    Decode(String),
}

/// Decides the pull transformation from the stored algorithm and the requested one.
pub fn plan(stored: Option<&str>, requested: Option<&str>) -> anyhow::Result<PullPlan> {
    Ok(match (stored, requested) {
        (None, None) => PullPlan::Plain,
        (Some(s), Some(d)) if family(s) == family(d) => PullPlan::Plain,
        (Some(s), None) => PullPlan::Encode(s.to_string()),
        (None, Some(d)) => PullPlan::Decode(d.to_string()),
        (Some(s), Some(d)) => {
            bail!("the file was pushed with compression {s}, which {d} cannot decompress")
        }
    })
}

fn unsupported(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "compression {name} is not implemented by holdfast's datasafed (only the zstd family); pull with -d {name} to get the plain bytes"
    )
}

/// Copies `input` to `out`, compressing with `name`. Returns the bytes written.
pub fn encode(name: &str, input: &mut dyn Read, out: &mut dyn Write) -> anyhow::Result<()> {
    if family(name) != Family::Zstd {
        return Err(unsupported(name));
    }
    let mut enc = zstd::stream::write::Encoder::new(out, zstd_level(name))?;
    std::io::copy(input, &mut enc)?;
    enc.finish()?.flush()?;
    Ok(())
}

/// Copies `input` to `out`, decompressing with `name`.
pub fn decode(name: &str, input: &mut dyn Read, out: &mut dyn Write) -> anyhow::Result<()> {
    if family(name) != Family::Zstd {
        bail!(
            "compression {name} is not implemented by holdfast's datasafed (only the zstd family)"
        );
    }
    let mut dec = zstd::stream::read::Decoder::new(input)?;
    std::io::copy(&mut dec, out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_table() {
        assert_eq!(plan(None, None).unwrap(), PullPlan::Plain);
        assert_eq!(plan(Some("zstd-fastest"), Some("zstd")).unwrap(), PullPlan::Plain);
        assert_eq!(plan(Some("lz4"), Some("lz4")).unwrap(), PullPlan::Plain);
        assert_eq!(plan(Some("zstd"), None).unwrap(), PullPlan::Encode("zstd".into()));
        assert_eq!(plan(None, Some("zstd")).unwrap(), PullPlan::Decode("zstd".into()));
        assert!(plan(Some("gzip"), Some("zstd")).is_err());
        assert_eq!(family("pgzip-best-speed"), Family::Gzip);
    }

    #[test]
    fn zstd_round_trips_and_others_name_themselves() {
        let data = b"hello hello hello hello".repeat(100);
        let mut z = Vec::new();
        encode("zstd-fastest", &mut data.as_slice(), &mut z).unwrap();
        assert!(z.len() < data.len());
        let mut back = Vec::new();
        decode("zstd", &mut z.as_slice(), &mut back).unwrap();
        assert_eq!(back, data);
        let e = encode("lz4", &mut data.as_slice(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("lz4"), "{e}");
    }
}
