//! Which model scores which stream: glob patterns over stream ids.

use std::{path::Path, sync::Arc};

use sensorae::{DynDetector, ModelView};

use super::{ErrorKind, PipelineError};

/// A loaded model, shared by every stream it scores (each stream clones the detector).
#[derive(Debug)]
pub struct Model {
    /// Where it came from (a path or a label).
    pub label: String,
    /// A detector with the model loaded and no stream state.
    pub detector: DynDetector,
    /// Channel names, in the order samples must list values (shared with every record that
    /// names one, so a record costs no string copy).
    pub channels: Vec<Arc<str>>,
}

/// An ordered list of `pattern -> model`; the first pattern matching a stream id wins.
///
/// Patterns are globs: `*` matches any run of characters (also none), `?` one character, and
/// every other character itself; `*` alone matches every stream.
///
/// # Examples
/// ```
/// use sensorae_host::pipeline::ModelMap;
///
/// let bytes = sensorae::testing::tiny_model_bytes();
/// let mut models = ModelMap::new();
/// models.add_bytes("pump-*", "pump", &bytes)?;
/// assert!(models.resolve("pump-7").is_some());
/// assert!(models.resolve("valve-1").is_none());
/// # Ok::<(), sensorae_host::pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ModelMap {
    entries: Vec<(String, Arc<Model>)>,
}

impl ModelMap {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model from bytes for streams matching `pattern`.
    ///
    /// # Errors
    /// [`ErrorKind::Model`] when the bytes are not a valid model, [`ErrorKind::Config`] for an
    /// empty pattern.
    pub fn add_bytes(
        &mut self,
        pattern: &str,
        label: &str,
        bytes: &[u8],
    ) -> Result<&mut Self, PipelineError> {
        if pattern.is_empty() {
            return Err(PipelineError::config("empty stream pattern"));
        }
        let bad = |e: &dyn core::fmt::Display| {
            PipelineError::new(ErrorKind::Model {
                path: label.into(),
                message: e.to_string(),
            })
        };
        let detector = DynDetector::from_bytes(bytes).map_err(|e| bad(&e))?;
        let view = ModelView::from_bytes(bytes).map_err(|e| bad(&e))?;
        let channels = view.channels().map(|c| Arc::from(c.name)).collect();
        self.entries.push((
            pattern.to_owned(),
            Arc::new(Model {
                label: label.to_owned(),
                detector,
                channels,
            }),
        ));
        Ok(self)
    }

    /// Reads a model file for streams matching `pattern`.
    ///
    /// # Errors
    /// [`ErrorKind::Model`] naming the file when it cannot be read or loaded.
    pub fn add_file(
        &mut self,
        pattern: &str,
        path: impl AsRef<Path>,
    ) -> Result<&mut Self, PipelineError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            PipelineError::new(ErrorKind::Model {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        })?;
        self.add_bytes(pattern, &path.display().to_string(), &bytes)
    }

    /// Adds a command-line spec: `PATTERN=FILE`, or `FILE` alone for every stream.
    ///
    /// # Errors
    /// As [`ModelMap::add_file`].
    pub fn add_spec(&mut self, spec: &str) -> Result<&mut Self, PipelineError> {
        match spec.split_once('=') {
            Some((pattern, path)) => self.add_file(pattern.trim(), path.trim()),
            None => self.add_file("*", spec),
        }
    }

    /// The model for a stream: the first whose pattern matches.
    #[must_use]
    pub fn resolve(&self, stream: &str) -> Option<&Arc<Model>> {
        self.entries
            .iter()
            .find(|(p, _)| glob_match(p, stream))
            .map(|(_, m)| m)
    }

    /// Number of patterns.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Glob match with `*` and `?`, linear time (greedy with one backtrack point).
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("*", "", true),
            ("*", "pump-1", true),
            ("pump-*", "pump-1", true),
            ("pump-*", "pump-", true),
            ("pump-*", "valve-1", false),
            ("p?mp-*", "pump-12", true),
            ("*-1", "pump-1", true),
            ("*-1", "pump-12", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} vs {t}");
        }
    }

    #[test]
    fn first_match_wins_and_bad_bytes_are_errors() {
        let bytes = sensorae::testing::tiny_model_bytes();
        let mut m = ModelMap::new();
        m.add_bytes("pump-1", "one", &bytes).unwrap();
        m.add_bytes("pump-*", "all", &bytes).unwrap();
        assert_eq!(m.resolve("pump-1").unwrap().label, "one");
        assert_eq!(m.resolve("pump-2").unwrap().label, "all");
        let names: Vec<&str> = m
            .resolve("pump-2")
            .unwrap()
            .channels
            .iter()
            .map(|c| &**c)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let err = m.add_bytes("*", "junk", b"junk").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Model { .. }), "{err}");
        assert!(m.add_spec("/nonexistent.snae").is_err());
    }
}
