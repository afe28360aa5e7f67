//! The Python value encoding (DESIGN §2.9) and the canonical key encoding (§2.10).
//!
//! A value is one item; an item is a type byte and its payload. Containers hold items; a Python
//! object of any other type is a pickle fragment (protocol 5) whose out-of-band buffers are the
//! value's out-of-line parts, taken in order. Decoding reads the mapped bytes and builds the
//! Python objects directly; every length and count is checked against the bytes left, so a
//! damaged or hostile value is an error, never a crash or an unbounded allocation.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};

use crate::errors;
use crate::view::HeldBuffer;

/// The value kind's tag of this encoding (`Kind::Tagged(0)`); a later encoding takes another tag
/// of the range 0..=127 reserved for the Python codec.
pub const TAG_PY1: u8 = 0;

const NONE: u8 = 0x00;
const FALSE: u8 = 0x01;
const TRUE: u8 = 0x02;
const INT: u8 = 0x03;
const BIGINT: u8 = 0x04;
const FLOAT: u8 = 0x05;
const STR: u8 = 0x06;
const BYTES: u8 = 0x07;
const TUPLE: u8 = 0x08;
const LIST: u8 = 0x09;
const DICT: u8 = 0x0A;
const SET: u8 = 0x0B;
const FROZENSET: u8 = 0x0C;
const PICKLE: u8 = 0x0D;
/// 0x40..=0x7F: a str of 0..=63 UTF-8 bytes, the length in the low six bits.
const SHORT_STR: u8 = 0x40;
/// 0x80..=0xBF: an int of 0..=63.
const SMALL_INT: u8 = 0x80;

/// Containers nest at most this deep in the native encoding; a deeper value (or a cycle) is
/// pickled whole when the heap trusts pickle, refused otherwise. Decoding refuses deeper items.
pub const MAX_DEPTH: usize = 200;

fn pickle_fn<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static SAFE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(match name {
        "dumps" => DUMPS.import(py, "pickle", name)?,
        "safe_loads" => SAFE_LOADS.import(py, "pheap._trust", "loads")?,
        _ => LOADS.import(py, "pickle", name)?,
    }
    .clone())
}

/// What a heap lets pickle fragments do (Python `trusted=`): `True` reads and writes them,
/// `"safe"` writes them and reads only those whose globals are on an allowlist
/// (`pheap._trust`), `False` neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    All,
    Safe,
    Off,
}

impl Trust {
    /// Are pickle fragments written?
    pub fn writes(self) -> bool {
        self != Trust::Off
    }

    /// As Python's `trusted=` gives it back.
    pub fn to_object<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Trust::All => PyBool::new(py, true).to_owned().into_any(),
            Trust::Off => PyBool::new(py, false).to_owned().into_any(),
            Trust::Safe => PyString::new(py, "safe").into_any(),
        })
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Trust {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = ob.cast::<PyBool>() {
            return Ok(if b.is_true() { Trust::All } else { Trust::Off });
        }
        if ob.extract::<&str>().is_ok_and(|s| s == "safe") {
            return Ok(Trust::Safe);
        }
        Err(PyTypeError::new_err(format!(
            "trusted must be True, False or \"safe\", not {}",
            ob.repr()?
        )))
    }
}

fn int_bytes(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    // Minimal two's complement, little-endian: (bit_length + 8) // 8 bytes.
    let bits: usize = v.call_method0("bit_length")?.extract()?;
    let kw = PyDict::new(v.py());
    kw.set_item("signed", true)?;
    let b = v.call_method("to_bytes", ((bits + 8) / 8, "little"), Some(&kw))?;
    Ok(b.cast::<PyBytes>()?.as_bytes().to_vec())
}

fn int_from_bytes<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("signed", true)?;
    py.get_type::<PyInt>().call_method("from_bytes", (PyBytes::new(py, b), "little"), Some(&kw))
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why the native encoding gave up on a value: too deep (or cyclic), or a fragment that pickle
/// would have to write on an untrusting heap.
enum Fail {
    Py(PyErr),
    TooDeep,
}

impl From<pyo3::CastError<'_, '_>> for Fail {
    fn from(e: pyo3::CastError<'_, '_>) -> Fail {
        Fail::Py(e.into())
    }
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Fail {
        Fail::Py(e)
    }
}

/// An encoded value: the inline bytes and the out-of-band buffers of its pickle fragments.
pub struct Encoded {
    /// The item bytes.
    pub inline: Vec<u8>,
    /// Out-of-band buffers, in the order the fragments consume them.
    pub buffers: Vec<HeldBuffer>,
}

/// Encode `obj` as a value; `trusted` allows pickle fragments.
pub fn encode(obj: &Bound<'_, PyAny>, trusted: bool) -> PyResult<Encoded> {
    let mut e = Encoder { out: Vec::with_capacity(64), buffers: Vec::new(), trusted };
    match e.item(obj, 0) {
        Ok(()) => Ok(Encoded { inline: e.out, buffers: e.buffers }),
        Err(Fail::Py(err)) => Err(err),
        Err(Fail::TooDeep) if trusted => {
            // Cycles and very deep values: pickle keeps shared references and cycles.
            let mut e = Encoder { out: Vec::new(), buffers: Vec::new(), trusted };
            e.pickle(obj)?;
            Ok(Encoded { inline: e.out, buffers: e.buffers })
        }
        Err(Fail::TooDeep) => Err(PyValueError::new_err(format!(
            "value nested deeper than {MAX_DEPTH} containers (or containing itself): the native \
             encoding cannot hold it, and this heap does not trust pickle (trusted=False)"
        ))),
    }
}

struct Encoder {
    out: Vec<u8>,
    buffers: Vec<HeldBuffer>,
    trusted: bool,
}

impl Encoder {
    fn len(&mut self, n: usize) {
        put_uvarint(&mut self.out, n as u64);
    }

    fn str_item(&mut self, s: &str) {
        if s.len() < 64 {
            self.out.push(SHORT_STR | s.len() as u8);
        } else {
            self.out.push(STR);
            self.len(s.len());
        }
        self.out.extend_from_slice(s.as_bytes());
    }

    fn items<'py>(
        &mut self,
        tag: u8,
        items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
        depth: usize,
    ) -> Result<(), Fail> {
        self.out.push(tag);
        self.len(items.len());
        for it in items {
            self.item(&it, depth + 1)?;
        }
        Ok(())
    }

    fn item(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Fail> {
        if depth > MAX_DEPTH {
            return Err(Fail::TooDeep);
        }
        if obj.is_exact_instance_of::<PyString>() {
            // Strings with lone surrogates are not UTF-8: they go to pickle (faithful).
            if let Ok(s) = obj.cast::<PyString>()?.to_str() {
                self.str_item(s);
                return Ok(());
            }
        } else if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(v) = obj.extract::<i64>() {
                if (0..64).contains(&v) {
                    self.out.push(SMALL_INT | v as u8);
                } else {
                    self.out.push(INT);
                    put_uvarint(&mut self.out, ((v << 1) ^ (v >> 63)) as u64);
                }
            } else {
                let b = int_bytes(obj)?;
                self.out.push(BIGINT);
                self.len(b.len());
                self.out.extend_from_slice(&b);
            }
            return Ok(());
        } else if obj.is_exact_instance_of::<PyFloat>() {
            let v: f64 = obj.extract()?;
            self.out.push(FLOAT);
            self.out.extend_from_slice(&v.to_bits().to_le_bytes());
            return Ok(());
        } else if obj.is_exact_instance_of::<PyDict>() {
            // Collected first: encoding a pickle fragment runs Python code, which could change
            // the dict under an iteration.
            let d = obj.cast::<PyDict>()?;
            let pairs: Vec<_> = d.iter().collect();
            self.out.push(DICT);
            self.len(pairs.len());
            for (k, v) in pairs {
                self.item(&k, depth + 1)?;
                self.item(&v, depth + 1)?;
            }
            return Ok(());
        } else if obj.is_exact_instance_of::<PyTuple>() {
            let t = obj.cast::<PyTuple>()?;
            return self.items(TUPLE, t.iter(), depth);
        } else if obj.is_exact_instance_of::<PyList>() {
            let items: Vec<_> = obj.cast::<PyList>()?.iter().collect();
            return self.items(LIST, items.into_iter(), depth);
        } else if obj.is_none() {
            self.out.push(NONE);
            return Ok(());
        } else if obj.is_exact_instance_of::<PyBool>() {
            self.out.push(if obj.is_truthy()? { TRUE } else { FALSE });
            return Ok(());
        } else if obj.is_exact_instance_of::<PyBytes>() {
            let b = obj.cast::<PyBytes>()?.as_bytes();
            self.out.push(BYTES);
            self.len(b.len());
            self.out.extend_from_slice(b);
            return Ok(());
        } else if obj.is_exact_instance_of::<PySet>() {
            let items: Vec<_> = obj.cast::<PySet>()?.iter().collect();
            return self.items(SET, items.into_iter(), depth);
        } else if obj.is_exact_instance_of::<PyFrozenSet>() {
            let items: Vec<_> = obj.cast::<PyFrozenSet>()?.iter().collect();
            return self.items(FROZENSET, items.into_iter(), depth);
        }
        self.pickle(obj)?;
        Ok(())
    }

    fn pickle(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        if !self.trusted {
            return Err(errors::untrusted(format!(
                "a {} is not a native value and this heap does not trust pickle (trusted=False)",
                obj.get_type().name()?
            )));
        }
        let bufs = PyList::empty(py);
        let kw = PyDict::new(py);
        kw.set_item("protocol", 5)?;
        kw.set_item("buffer_callback", bufs.getattr("append")?)?;
        let data = pickle_fn(py, "dumps")?.call((obj,), Some(&kw))?;
        let data = data.cast::<PyBytes>()?.as_bytes();
        self.out.push(PICKLE);
        self.len(data.len());
        self.out.extend_from_slice(data);
        self.len(bufs.len());
        for b in bufs.iter() {
            // PickleBuffer.raw(): the buffer as contiguous bytes (BufferError otherwise).
            let raw = b.call_method0("raw")?;
            self.buffers.push(HeldBuffer::new(&raw)?);
        }
        Ok(())
    }
}

/// Where a decoded pickle fragment gets its out-of-band buffers: `buffer(i)` for the value's
/// `i`-th buffer.
pub trait Buffers<'py> {
    /// How many buffers the value has.
    fn count(&self) -> usize;
    /// Buffer `i` as a Python object exporting the buffer protocol.
    fn buffer(&mut self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>>;
}

/// Decode a value's item bytes.
pub fn decode<'py>(
    py: Python<'py>,
    bytes: &[u8],
    buffers: &mut dyn Buffers<'py>,
    trust: Trust,
) -> PyResult<Bound<'py, PyAny>> {
    let mut d = Decoder { py, buf: bytes, pos: 0, next_buffer: 0, buffers, trust };
    let v = d.item(0)?;
    if d.pos != bytes.len() {
        return Err(d.corrupt("bytes after the value's item"));
    }
    if d.next_buffer != d.buffers.count() {
        return Err(d.corrupt("out-of-line parts no pickle fragment uses"));
    }
    Ok(v)
}

/// The pickle fragments of a value's item bytes, in order, without building anything: what a
/// publication lists (the globals its pickles need), decoded by nobody.
pub fn pickle_fragments<'a>(py: Python<'_>, bytes: &'a [u8]) -> PyResult<Vec<&'a [u8]>> {
    struct NoBuffers;
    impl<'py> Buffers<'py> for NoBuffers {
        fn count(&self) -> usize {
            0
        }
        fn buffer(&mut self, _: Python<'py>, _: usize) -> PyResult<Bound<'py, PyAny>> {
            Err(PyValueError::new_err("no buffers"))
        }
    }
    let mut d = Decoder {
        py,
        buf: bytes,
        pos: 0,
        next_buffer: 0,
        buffers: &mut NoBuffers,
        trust: Trust::Off,
    };
    let mut out = Vec::new();
    d.skip(0, &mut out)?;
    if d.pos != bytes.len() {
        return Err(d.corrupt("bytes after the value's item"));
    }
    Ok(out)
}

/// Strings of up to this many bytes are cached as dict keys.
const KEY_CACHE_MAX: usize = 24;
const KEY_CACHE_SLOTS: usize = 512;

type KeyCache = Vec<Option<(Box<[u8]>, Py<PyString>)>>;

thread_local! {
    /// Recently decoded dict keys, by a hash of their bytes (used with the GIL held).
    static KEY_CACHE: std::cell::RefCell<KeyCache> =
        std::cell::RefCell::new((0..KEY_CACHE_SLOTS).map(|_| None).collect());
}

fn key_cache_slot(b: &[u8]) -> usize {
    // FNV-1a: short keys, a handful of cycles.
    let mut h: u32 = 0x811C_9DC5;
    for &x in b {
        h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
    }
    (h as usize ^ (h >> 16) as usize) % KEY_CACHE_SLOTS
}

struct Decoder<'a, 'b, 'py> {
    py: Python<'py>,
    buf: &'a [u8],
    pos: usize,
    next_buffer: usize,
    buffers: &'b mut dyn Buffers<'py>,
    trust: Trust,
}

impl<'a, 'py> Decoder<'a, '_, 'py> {
    fn corrupt(&self, what: &str) -> PyErr {
        errors::corrupt(format!("python value damaged at byte {}: {what}", self.pos))
    }

    fn byte(&mut self) -> PyResult<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.corrupt("item cut short"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(self.corrupt("length past the end of the value"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uvarint(&mut self) -> PyResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 64 bits"))
    }

    /// A length or count: no more than the bytes left (every item takes at least one byte).
    fn count(&mut self) -> PyResult<usize> {
        let n = self.uvarint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.corrupt("count larger than the bytes left"));
        }
        Ok(n as usize)
    }

    fn str_of(&mut self, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let b = self.take(n)?;
        // Python validates the UTF-8 as it decodes.
        match PyString::from_bytes(self.py, b) {
            Ok(s) => Ok(s.into_any()),
            Err(_) => Err(self.corrupt("str not UTF-8")),
        }
    }

    /// A dict key: short strings come from a small cache of recent keys (records repeat their
    /// field names; a cached str also keeps its hash, which the dict needs).
    fn dict_key(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let t = *self.buf.get(self.pos).ok_or_else(|| self.corrupt("item cut short"))?;
        let n = usize::from(t.wrapping_sub(SHORT_STR));
        if !(1..=KEY_CACHE_MAX).contains(&n) || t > 0x7F {
            return self.item(depth);
        }
        let b = self
            .buf
            .get(self.pos + 1..self.pos + 1 + n)
            .ok_or_else(|| self.corrupt("str cut short"))?;
        let slot = key_cache_slot(b);
        let py = self.py;
        let hit = KEY_CACHE.with_borrow(|c| {
            c[slot].as_ref().filter(|(k, _)| &k[..] == b).map(|(_, s)| s.clone_ref(py))
        });
        if let Some(s) = hit {
            self.pos += 1 + n;
            return Ok(s.into_bound(py).into_any());
        }
        let s = self.item(depth)?;
        if let Ok(ps) = s.cast::<PyString>() {
            let entry = (b.to_vec().into_boxed_slice(), ps.clone().unbind());
            KEY_CACHE.with_borrow_mut(|c| c[slot] = Some(entry));
        }
        Ok(s)
    }

    fn seq(&mut self, depth: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.item(depth + 1)?);
        }
        Ok(v)
    }

    /// Step over one item, collecting the pickle fragments in it.
    fn skip(&mut self, depth: usize, out: &mut Vec<&'a [u8]>) -> PyResult<()> {
        if depth > MAX_DEPTH {
            return Err(self.corrupt("items nested too deep"));
        }
        let t = self.byte()?;
        match t {
            SHORT_STR..=0x7F => drop(self.take(usize::from(t - SHORT_STR))?),
            SMALL_INT..=0xBF | NONE | FALSE | TRUE => {}
            INT => drop(self.uvarint()?),
            FLOAT => drop(self.take(8)?),
            BIGINT | STR | BYTES => {
                let n = self.count()?;
                self.take(n)?;
            }
            TUPLE | LIST | SET | FROZENSET | DICT => {
                let n = self.count()? * if t == DICT { 2 } else { 1 };
                for _ in 0..n {
                    self.skip(depth + 1, out)?;
                }
            }
            PICKLE => {
                let n = self.count()?;
                out.push(self.take(n)?);
                self.uvarint()?;
            }
            _ => return Err(self.corrupt("unknown type byte")),
        }
        Ok(())
    }

    fn item(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(self.corrupt("items nested too deep"));
        }
        let py = self.py;
        let t = self.byte()?;
        Ok(match t {
            SHORT_STR..=0x7F => return self.str_of(usize::from(t - SHORT_STR)),
            SMALL_INT..=0xBF => (t - SMALL_INT).into_pyobject(py)?.into_any(),
            NONE => py.None().into_bound(py),
            FALSE => PyBool::new(py, false).to_owned().into_any(),
            TRUE => PyBool::new(py, true).to_owned().into_any(),
            INT => {
                let z = self.uvarint()?;
                (((z >> 1) as i64) ^ -((z & 1) as i64)).into_pyobject(py)?.into_any()
            }
            BIGINT => {
                let n = self.count()?;
                let b = self.take(n)?;
                int_from_bytes(py, b)?
            }
            FLOAT => {
                let b = self.take(8)?;
                PyFloat::new(py, f64::from_bits(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
                    .into_any()
            }
            STR => {
                let n = self.count()?;
                return self.str_of(n);
            }
            BYTES => {
                let n = self.count()?;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            TUPLE => PyTuple::new(py, self.seq(depth)?)?.into_any(),
            LIST => PyList::new(py, self.seq(depth)?)?.into_any(),
            SET => PySet::new(py, self.seq(depth)?)?.into_any(),
            FROZENSET => PyFrozenSet::new(py, self.seq(depth)?)?.into_any(),
            DICT => {
                let n = self.count()?;
                let d = PyDict::new(py);
                for _ in 0..n {
                    let k = self.dict_key(depth + 1)?;
                    let v = self.item(depth + 1)?;
                    d.set_item(k, v)?;
                }
                d.into_any()
            }
            PICKLE => {
                let n = self.count()?;
                let start = self.pos;
                self.take(n)?;
                let nbuf = self.uvarint()?;
                if self.trust == Trust::Off {
                    return Err(errors::untrusted(
                        "the value holds a pickle fragment and this heap does not trust pickle \
                         (opened with trusted=False): no code runs on load"
                            .to_string(),
                    ));
                }
                if nbuf > (self.buffers.count() - self.next_buffer) as u64 {
                    return Err(self.corrupt("pickle fragment uses parts the value lacks"));
                }
                let nbuf = nbuf as usize;
                let bufs = PyList::empty(py);
                for i in 0..nbuf {
                    bufs.append(self.buffers.buffer(py, self.next_buffer + i)?)?;
                }
                self.next_buffer += nbuf;
                let kw = PyDict::new(py);
                kw.set_item("buffers", bufs)?;
                let data = PyBytes::new(py, &self.buf[start..start + n]);
                let loads = if self.trust == Trust::Safe { "safe_loads" } else { "loads" };
                pickle_fn(py, loads)?.call((data,), Some(&kw))?
            }
            _ => return Err(self.corrupt("unknown type byte")),
        })
    }
}

/// Bytes as a private, writable buffer (`copy=True`).
pub fn private_buffer<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
    PyByteArray::new(py, b).into_any()
}

// ---- keys ----------------------------------------------------------------------------------

const KEY_BYTES: u8 = 0xFF;
const KEY_INT: u8 = 0xFE;
const KEY_BIGINT: u8 = 0xFD;
const KEY_TUPLE: u8 = 0xFC;
const EL_STR: u8 = 0x01;
const EL_BYTES: u8 = 0x02;
const EL_INT: u8 = 0x03;
const EL_BIGINT: u8 = 0x04;
const EL_TUPLE: u8 = 0x05;

/// The canonical bytes of a key: a str is its UTF-8 (what the CLI and Rust see); bytes, ints
/// and tuples start with a byte UTF-8 never holds (0xFC..=0xFF). `True`/`False` are the ints
/// 1/0, as in a dict.
pub fn encode_key(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(key_str(s)?.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(16);
    if let Ok(b) = key.cast::<PyBytes>() {
        out.push(KEY_BYTES);
        out.extend_from_slice(b.as_bytes());
    } else if key.is_instance_of::<PyInt>() {
        key_int(key, &mut out, KEY_INT, KEY_BIGINT)?;
    } else if let Ok(t) = key.cast::<PyTuple>() {
        out.push(KEY_TUPLE);
        key_tuple_items(t, &mut out, 0)?;
    } else {
        return Err(PyTypeError::new_err(format!(
            "a key must be str, bytes, int or a tuple of them, not {}",
            key.get_type().name()?
        )));
    }
    Ok(out)
}

fn key_str<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    s.to_str().map_err(|_| PyValueError::new_err("a str key must be encodable as UTF-8"))
}

fn key_int(v: &Bound<'_, PyAny>, out: &mut Vec<u8>, small: u8, big: u8) -> PyResult<()> {
    if let Ok(i) = v.extract::<i64>() {
        out.push(small);
        out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
    } else {
        let b = int_bytes(v)?;
        out.push(big);
        put_uvarint(out, b.len() as u64);
        out.extend_from_slice(&b);
    }
    Ok(())
}

fn key_tuple_items(t: &Bound<'_, PyTuple>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("key tuple nested too deep"));
    }
    put_uvarint(out, t.len() as u64);
    for el in t.iter() {
        if let Ok(s) = el.cast::<PyString>() {
            let s = key_str(s)?;
            out.push(EL_STR);
            put_uvarint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        } else if let Ok(b) = el.cast::<PyBytes>() {
            out.push(EL_BYTES);
            put_uvarint(out, b.as_bytes().len() as u64);
            out.extend_from_slice(b.as_bytes());
        } else if el.is_instance_of::<PyInt>() {
            key_int(&el, out, EL_INT, EL_BIGINT)?;
        } else if let Ok(t) = el.cast::<PyTuple>() {
            out.push(EL_TUPLE);
            key_tuple_items(t, out, depth + 1)?;
        } else {
            return Err(PyTypeError::new_err(format!(
                "a key tuple may hold str, bytes, int and tuples, not {}",
                el.get_type().name()?
            )));
        }
    }
    Ok(())
}

/// The Python key of stored key bytes. Keys no Python encoding produces (written by the CLI or
/// Rust: not UTF-8 and no key tag, or a malformed tagged key) come back as `bytes`, which address
/// them only with `codec="raw"`.
pub fn decode_key<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let parsed = match b.first() {
        Some(&KEY_BYTES) => Some(PyBytes::new(py, &b[1..]).into_any()),
        Some(&(KEY_INT | KEY_BIGINT | KEY_TUPLE)) => {
            let mut d = KeyDecoder { py, b, pos: 1 };
            let v = match b[0] {
                KEY_TUPLE => d.tuple(0),
                t => d.int(t == KEY_BIGINT),
            };
            match v {
                Ok(v) if d.pos == b.len() => Some(v),
                _ => None,
            }
        }
        _ => std::str::from_utf8(b).ok().map(|s| PyString::new(py, s).into_any()),
    };
    Ok(parsed.unwrap_or_else(|| PyBytes::new(py, b).into_any()))
}

struct KeyDecoder<'a, 'py> {
    py: Python<'py>,
    b: &'a [u8],
    pos: usize,
}

impl<'a, 'py> KeyDecoder<'a, 'py> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn int(&mut self, big: bool) -> PyResult<Bound<'py, PyAny>> {
        let bad = || PyValueError::new_err("malformed int key");
        if big {
            let n = usize::try_from(self.uvarint().ok_or_else(bad)?).map_err(|_| bad())?;
            let b = self.take(n).ok_or_else(bad)?.to_vec();
            return int_from_bytes(self.py, &b);
        }
        let b: [u8; 8] = self.take(8).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        Ok(((u64::from_be_bytes(b) ^ (1 << 63)) as i64).into_pyobject(self.py)?.into_any())
    }

    fn tuple(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let bad = || PyValueError::new_err("malformed tuple key");
        if depth > MAX_DEPTH {
            return Err(bad());
        }
        let n = self.uvarint().ok_or_else(bad)?;
        if n > (self.b.len() - self.pos) as u64 {
            return Err(bad());
        }
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = self.take(1).ok_or_else(bad)?[0];
            items.push(match t {
                EL_STR | EL_BYTES => {
                    let len =
                        usize::try_from(self.uvarint().ok_or_else(bad)?).map_err(|_| bad())?;
                    let b = self.take(len).ok_or_else(bad)?;
                    if t == EL_STR {
                        PyString::new(self.py, std::str::from_utf8(b).map_err(|_| bad())?)
                            .into_any()
                    } else {
                        PyBytes::new(self.py, b).into_any()
                    }
                }
                EL_INT => self.int(false)?,
                EL_BIGINT => self.int(true)?,
                EL_TUPLE => self.tuple(depth + 1)?,
                _ => return Err(bad()),
            });
        }
        Ok(PyTuple::new(self.py, items)?.into_any())
    }
}
