//! Typed reading of the fields of a JSON config file (`config.json`,
//! `preprocessor_config.json`, `open_clip_config.json`): the one reader every config
//! parser uses. A `null` counts as missing, so the default applies; a value that is present
//! but unusable is a [`FieldError`] naming the file and the field's full path
//! (`vision_config.patch_size`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A field that is present but unusable. Each config parser turns it into its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: PathBuf,
    /// The field's path, e.g. `text_config.eos_token_id`.
    pub field: String,
    /// What is wrong with it, e.g. "must be a positive integer, found -3".
    pub problem: String,
}

/// One JSON object of a config file, and where it is: the file and the object's path.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    map: Cow<'a, Map<String, Value>>,
    path: &'a Path,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// The top level of the file `path`, which must be an object.
    pub fn root(value: &'a Value, path: &'a Path) -> Result<Self, FieldError> {
        match value {
            Value::Object(map) => Ok(Self {
                map: Cow::Borrowed(map),
                path,
                prefix: String::new(),
            }),
            _ => Err(FieldError {
                path: path.to_path_buf(),
                field: "<top level>".into(),
                problem: "must be a JSON object".into(),
            }),
        }
    }

    /// `map`, found at `prefix` (e.g. `"text_config."`) in `path`.
    pub fn new(map: Map<String, Value>, path: &'a Path, prefix: &str) -> Self {
        Self {
            map: Cow::Owned(map),
            path,
            prefix: prefix.to_string(),
        }
    }

    /// The object's own map.
    pub fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The file.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// The value of `key`, unless it is missing or `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The string value of `key`, if it is one.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An error about `field` of this object.
    pub fn error(&self, field: &str, problem: impl Into<String>) -> FieldError {
        FieldError {
            path: self.path.to_path_buf(),
            field: format!("{}{field}", self.prefix),
            problem: problem.into(),
        }
    }

    /// The object at `key` (empty when missing), its fields named `<prefix><key>.`.
    pub fn object(&self, key: &str) -> Result<Fields<'a>, FieldError> {
        let map = match self.get(key) {
            None => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(self.error(key, "must be a JSON object")),
        };
        Ok(Fields::new(
            map,
            self.path,
            &format!("{}{key}.", self.prefix),
        ))
    }

    /// A positive integer, `default` when missing.
    pub fn usize(&self, key: &str, default: usize) -> Result<usize, FieldError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => usize::try_from(n).map_err(|_| self.error(key, "is too large")),
                _ => Err(self.error(key, format!("must be a positive integer, found {v}"))),
            },
        }
    }

    /// A token id (a non-negative integer), `default` when missing.
    pub fn u32(&self, key: &str, default: u32) -> Result<u32, FieldError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    self.error(
                        key,
                        format!("must be a token id (a non-negative integer), found {v}"),
                    )
                }),
        }
    }

    /// A positive finite number, `default` when missing.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64, FieldError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(self.error(key, format!("must be a positive number, found {v}"))),
            },
        }
    }

    /// Any number, when present.
    pub fn number(&self, key: &str) -> Result<Option<f64>, FieldError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.error(key, format!("must be a number, found {v}")))
            })
            .transpose()
    }

    /// `true` or `false`, when present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.error(key, format!("must be true or false, found {v}")))
            })
            .transpose()
    }

    /// Three numbers (one per colour channel), when present; a single number is used for
    /// all three, as transformers and open_clip do.
    pub fn triple(&self, key: &str) -> Result<Option<[f64; 3]>, FieldError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Some(x) = v.as_f64() {
            return Ok(Some([x; 3]));
        }
        let bad = || {
            self.error(
                key,
                format!("must be a number or a list of 3 numbers, found {v}"),
            )
        };
        let list = v.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        let mut out = [0.0; 3];
        for (slot, item) in out.iter_mut().zip(list) {
            *slot = item.as_f64().ok_or_else(bad)?;
        }
        Ok(Some(out))
    }

    /// `v`, one of the values of `key`, as a positive `u32` (sizes in pixels).
    pub fn positive_in(&self, key: &str, v: &Value) -> Result<u32, FieldError> {
        v.as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.error(key, format!("must hold positive integers, found {v}")))
    }

    /// `size` is a multiple of `by`, the value of `field`.
    pub fn divisible(&self, size: usize, by: usize, field: &str) -> Result<(), FieldError> {
        if size.is_multiple_of(by) {
            Ok(())
        } else {
            Err(self.error(field, format!("({by}) must divide {size} evenly")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_null_take_defaults_and_bad_values_name_the_path() {
        let value: Value =
            serde_json::from_str(r#"{"a": null, "t": {"n": -3, "x": [1, 2, 3], "s": 0.5}}"#)
                .unwrap();
        let root = Fields::root(&value, Path::new("c.json")).unwrap();
        assert_eq!(root.usize("a", 7), Ok(7));
        let t = root.object("t").unwrap();
        let err = t.usize("n", 1).unwrap_err();
        assert_eq!(err.field, "t.n");
        assert_eq!(err.problem, "must be a positive integer, found -3");
        assert_eq!(t.triple("x"), Ok(Some([1.0, 2.0, 3.0])));
        assert_eq!(t.triple("s"), Ok(Some([0.5; 3])));
        assert_eq!(root.object("missing").unwrap().u32("id", 2), Ok(2));
        assert!(root.object("a").unwrap().map().is_empty());
        let top: Value = serde_json::from_str("[1]").unwrap();
        assert_eq!(
            Fields::root(&top, Path::new("c.json")).unwrap_err().field,
            "<top level>"
        );
    }
}
