//! What the Python package stored, in Python's literal syntax (`--python`): its values (DESIGN
//! §2.9) and keys (§2.10). Read only, and nothing is run: a pickle fragment is named by the
//! class its opcodes reference (`<pickled module.Class>`), never loaded.

use pheap::Kind;

/// The Python package's tag (DESIGN §2.9).
const TAG_PY: u8 = 0;
/// Deepest nesting the package writes natively.
const MAX_DEPTH: usize = 200;

/// The value of kind `kind` with inline part `inline` and out-of-line parts `parts`, as Python
/// shows it.
///
/// # Errors
///
/// A message when the bytes are not a value the package wrote.
pub fn value(kind: Kind, inline: &[u8], parts: &[&[u8]]) -> Result<String, String> {
    match kind {
        Kind::Map => Ok("<map>".into()),
        Kind::Tagged(t) if t != TAG_PY => Ok(format!("<value tagged {t}>")),
        Kind::Bytes => match parts {
            [] => Ok(bytes_repr(inline)),
            [p] if inline.is_empty() => Ok(bytes_repr(p)),
            _ => Ok(format!("<bytes in {} parts>", parts.len())),
        },
        Kind::Tagged(_) => {
            let item = match (inline.is_empty(), parts.first()) {
                (false, _) => inline,
                (true, Some(p)) => p,
                (true, None) => return Err("an empty Python value".into()),
            };
            let mut r = Reader { b: item, at: 0 };
            let out = r.item(0)?;
            if r.at != item.len() {
                return Err("bytes after the Python value".into());
            }
            Ok(out)
        }
    }
}

/// A stored key as Python shows it: the key the package's encoding gives, else its bytes.
pub fn key(b: &[u8]) -> String {
    let mut r = Reader { b, at: 0 };
    match r.key() {
        Ok(k) if r.at == b.len() => k,
        _ => bytes_repr(b),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("a length past the end of the value")?;
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uleb(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a LEB128 number longer than 10 bytes".into())
    }

    /// A count or length, no larger than the bytes left (each counted thing takes one).
    fn len(&mut self) -> Result<usize, String> {
        let n = self.uleb()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len() - self.at)
            .ok_or_else(|| "a count past the end of the value".into())
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| "a str that is not UTF-8")?;
        Ok(str_repr(s))
    }

    fn items(&mut self, depth: usize) -> Result<Vec<String>, String> {
        let n = self.len()?;
        (0..n).map(|_| self.item(depth + 1)).collect()
    }

    fn item(&mut self, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err("a value nested too deep".into());
        }
        let t = self.byte()?;
        Ok(match t {
            0x00 => "None".into(),
            0x01 => "False".into(),
            0x02 => "True".into(),
            0x03 => {
                let z = self.uleb()?;
                (((z >> 1) as i64) ^ -((z & 1) as i64)).to_string()
            }
            0x04 => {
                let n = self.len()?;
                big_int(self.take(n)?)
            }
            0x05 => float_repr(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            0x06 => {
                let n = self.len()?;
                self.text(n)?
            }
            0x40..=0x7f => self.text(usize::from(t - 0x40))?,
            0x80..=0xbf => (t - 0x80).to_string(),
            0x07 => {
                let n = self.len()?;
                bytes_repr(self.take(n)?)
            }
            0x08 => match self.items(depth)?.as_slice() {
                [one] => format!("({one},)"),
                items => format!("({})", items.join(", ")),
            },
            0x09 => format!("[{}]", self.items(depth)?.join(", ")),
            0x0a => {
                let n = self.len()?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.item(depth + 1)?;
                    pairs.push(format!("{k}: {}", self.item(depth + 1)?));
                }
                format!("{{{}}}", pairs.join(", "))
            }
            0x0b | 0x0c => {
                let items = self.items(depth)?;
                let set = if items.is_empty() {
                    "set()".into()
                } else {
                    format!("{{{}}}", items.join(", "))
                };
                match (t, items.is_empty()) {
                    (0x0b, _) => set,
                    (_, true) => "frozenset()".into(),
                    _ => format!("frozenset({set})"),
                }
            }
            0x0d => {
                let n = self.len()?;
                let pickle = self.take(n)?;
                self.uleb()?; // the buffers it takes
                match pickled_class(pickle) {
                    Some(class) => format!("<pickled {class}>"),
                    None => "<pickled object>".into(),
                }
            }
            t => return Err(format!("an unknown type byte {t:#04x}")),
        })
    }

    fn key(&mut self) -> Result<String, String> {
        match self.b.first() {
            Some(0xff) => {
                self.at = 1;
                Ok(bytes_repr(self.take(self.b.len() - 1)?))
            }
            Some(0xfe) | Some(0xfd) | Some(0xfc) => self.key_part(0),
            _ => std::str::from_utf8(self.b)
                .map(|s| {
                    self.at = self.b.len();
                    str_repr(s)
                })
                .map_err(|_| "not UTF-8".into()),
        }
    }

    /// A key's integer, big integer or tuple (the tuple's elements tagged 1..=5).
    fn key_part(&mut self, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err("a key nested too deep".into());
        }
        Ok(match self.byte()? {
            0xfe | 0x03 => {
                let v = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                ((v ^ (1 << 63)) as i64).to_string()
            }
            0xfd | 0x04 => {
                let n = self.len()?;
                big_int(self.take(n)?)
            }
            0x01 => {
                let n = self.len()?;
                self.text(n)?
            }
            0x02 => {
                let n = self.len()?;
                bytes_repr(self.take(n)?)
            }
            0xfc | 0x05 => {
                let n = self.len()?;
                let items =
                    (0..n).map(|_| self.key_part(depth + 1)).collect::<Result<Vec<_>, _>>()?;
                match items.as_slice() {
                    [one] => format!("({one},)"),
                    items => format!("({})", items.join(", ")),
                }
            }
            t => return Err(format!("an unknown key type {t:#04x}")),
        })
    }
}

/// A two's complement little-endian integer, in decimal as Python writes it.
fn big_int(b: &[u8]) -> String {
    let negative = b.last().is_some_and(|&h| h & 0x80 != 0);
    let mut mag = b.to_vec();
    if negative {
        // The magnitude: invert and add one.
        let mut carry = true;
        for x in &mut mag {
            let (v, c) = (!*x).overflowing_add(u8::from(carry));
            *x = v;
            carry = c;
        }
    }
    // Decimal digits by long division of the big-endian magnitude by 10.
    let mut be: Vec<u8> = mag.into_iter().rev().skip_while(|&x| x == 0).collect();
    let mut digits = Vec::new();
    while !be.is_empty() {
        let mut rem = 0u32;
        for x in &mut be {
            let cur = (rem << 8) | u32::from(*x);
            *x = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        let zeros = be.iter().take_while(|&&x| x == 0).count();
        be.drain(..zeros);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    let digits = String::from_utf8(digits).expect("ASCII digits");
    format!("{}{digits}", if negative { "-" } else { "" })
}

fn float_repr(f: f64) -> String {
    if f.is_nan() {
        "float('nan')".into()
    } else if f.is_infinite() {
        if f > 0.0 { "float('inf')".into() } else { "-float('inf')".into() }
    } else {
        format!("{f:?}")
    }
}

/// `repr` of a str: single quotes, escapes for controls, quotes and backslashes.
fn str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `repr` of bytes.
fn bytes_repr(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 3);
    out.push_str("b'");
    for &x in b {
        match x {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(x as char),
            x => out.push_str(&format!("\\x{x:02x}")),
        }
    }
    out.push('\'');
    out
}

/// The `module.Class` a pickle's first global reference names, read from its opcodes (the
/// string pushes, memo and frame opcodes a protocol-5 pickle opens with); `None` if another
/// opcode comes first. Nothing is executed.
fn pickled_class(p: &[u8]) -> Option<String> {
    let mut r = Reader { b: p, at: 0 };
    let mut strings: Vec<String> = Vec::new();
    let mut memo: Vec<String> = Vec::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    loop {
        let n = |r: &mut Reader<'_>, w: usize| -> Option<usize> {
            let b = r.take(w).ok()?;
            let mut le = [0u8; 8];
            le[..w].copy_from_slice(b);
            usize::try_from(u64::from_le_bytes(le)).ok()
        };
        match r.byte().ok()? {
            0x80 => drop(r.take(1).ok()?),              // PROTO
            0x95 => drop(r.take(8).ok()?),              // FRAME
            0x94 => memo.push(strings.last()?.clone()), // MEMOIZE
            0x8c | 0x58 | 0x8d => {
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                let w = match p[r.at - 1] {
                    0x8c => 1,
                    0x58 => 4,
                    _ => 8,
                };
                let len = n(&mut r, w)?;
                strings.push(text(r.take(len).ok()?));
            }
            0x68 => strings.push(memo.get(n(&mut r, 1)?)?.clone()), // BINGET
            0x6a => strings.push(memo.get(n(&mut r, 4)?)?.clone()), // LONG_BINGET
            0x93 => {
                // STACK_GLOBAL: module and name, the last two strings pushed
                let name = strings.pop()?;
                return Some(format!("{}.{name}", strings.pop()?));
            }
            b'c' => {
                // GLOBAL: "module\nname\n"
                let rest = &p[r.at..];
                let mut lines = rest.split(|&b| b == b'\n');
                let (module, name) = (lines.next()?, lines.next()?);
                return Some(format!("{}.{}", text(module), text(name)));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_the_package_writes() {
        // {'name': 'a', 'pos': (1.0, -2), 7: None, 'big': -2**70}
        let mut item = vec![0x0a, 4, 0x44];
        item.extend(b"name");
        item.extend([0x41, b'a', 0x43]);
        item.extend(b"pos");
        item.extend([0x08, 2, 0x05]);
        item.extend(1.0f64.to_le_bytes());
        item.extend([0x03, 3, 0x87, 0x00, 0x43]);
        item.extend(b"big");
        let big: Vec<u8> = {
            // -2**70 in two's complement, little-endian, 9 bytes.
            let mut v = vec![0u8; 9];
            v[8] = 0xc0;
            v
        };
        item.extend([0x04, 9]);
        item.extend(&big);
        assert_eq!(
            value(Kind::Tagged(0), &item, &[]).unwrap(),
            "{'name': 'a', 'pos': (1.0, -2), 7: None, 'big': -1180591620717411303424}"
        );
        assert_eq!(value(Kind::Tagged(0), &[0x0b, 0], &[]).unwrap(), "set()");
        assert_eq!(value(Kind::Tagged(0), &[0x0c, 1, 0x81], &[]).unwrap(), "frozenset({1})");
        assert_eq!(value(Kind::Tagged(0), &[0x08, 1, 0x01], &[]).unwrap(), "(False,)");
        assert_eq!(value(Kind::Bytes, b"a'\n\xff", &[]).unwrap(), "b'a\\'\\n\\xff'");
        assert!(value(Kind::Tagged(0), &[0x09, 5, 0x00], &[]).is_err(), "a count past the end");
        assert!(value(Kind::Tagged(0), &[0x00, 0x00], &[]).is_err(), "trailing bytes");
        assert!(value(Kind::Tagged(0), &[0x3f], &[]).is_err(), "an unknown type byte");
    }

    #[test]
    fn names_a_pickled_class_without_loading_it() {
        // pickle.dumps(Frob(), protocol=5) opens like this.
        let mut p = vec![0x80, 5, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, 0x8c, 8];
        p.extend(b"__main__");
        p.extend([0x94, 0x8c, 4]);
        p.extend(b"Frob");
        p.extend([0x94, 0x93, 0x94, 0x29, 0x81]);
        let mut item = vec![0x0d, p.len() as u8];
        item.extend(&p);
        item.push(0);
        assert_eq!(value(Kind::Tagged(0), &item, &[]).unwrap(), "<pickled __main__.Frob>");
    }

    #[test]
    fn renders_keys() {
        assert_eq!(key(b"item/1"), "'item/1'");
        assert_eq!(key(&[0xff, b'k']), "b'k'");
        let mut int = vec![0xfe];
        int.extend((5u64 ^ (1 << 63)).to_be_bytes());
        assert_eq!(key(&int), "5");
        let mut tup = vec![0xfc, 2, 0x01, 1, b'a', 0x03];
        tup.extend(((-1i64) as u64 ^ (1 << 63)).to_be_bytes());
        assert_eq!(key(&tup), "('a', -1)");
        assert_eq!(key(&[0xc3, 0x28]), "b'\\xc3('", "not UTF-8, not a tagged key: bytes");
    }
}
