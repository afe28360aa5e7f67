//! Macros the modules share.

/// A dict of `key => value` pairs (`?` on each insertion).
macro_rules! py_dict {
    ($py:expr, $($k:literal => $v:expr),* $(,)?) => {{
        let d = PyDict::new($py);
        $(d.set_item($k, $v)?;)*
        d
    }};
}
