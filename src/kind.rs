//! The kind of a value, as the public API names it (the on-disk tags are in `format`).

use std::fmt;

/// What a value is (DESIGN §2.6.1). The engine interprets [`Kind::Bytes`] and [`Kind::Map`];
/// [`Kind::Tagged`] values are bytes and parts like [`Kind::Bytes`], with a tag that higher
/// layers own (the Python package's codec, an application's record types) and the tools show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Plain bytes: one inline part, and zero or more out-of-line parts.
    Bytes,
    /// A sub-map, with entries of its own.
    Map,
    /// Bytes and parts with an application's tag (0..=255).
    Tagged(u8),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Bytes => f.write_str("bytes"),
            Kind::Map => f.write_str("a map"),
            Kind::Tagged(t) => write!(f, "a value tagged {t}"),
        }
    }
}

/// A key as messages show it: printable ASCII as is, other bytes escaped, long keys cut.
pub(crate) fn show_key(key: &[u8]) -> String {
    const MAX: usize = 64;
    let shown: String = key[..key.len().min(MAX)].escape_ascii().to_string();
    if key.len() > MAX {
        format!("\"{shown}...\" ({} bytes)", key.len())
    } else {
        format!("\"{shown}\"")
    }
}
