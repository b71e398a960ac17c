//! File writes that never leave a half-written file, and model file loading.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use sensorae::{DynDetector, ModelView};

use crate::error::{Error, Result};

/// Writes `path` atomically: the bytes go to a temporary file in the same directory, which is
/// synced and then renamed over `path`. On any failure the temporary file is removed and `path`
/// is untouched, so a crash or a kill never leaves a partial file.
///
/// # Errors
/// [`Error::Write`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill`.
///
/// # Errors
/// [`Error::Write`] naming `path`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&mut fs::File>) -> io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        {
            let mut w = io::BufWriter::new(&mut file);
            fill(&mut w)?;
            w.flush()?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        Error::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// `dir/.name.tmp-PID` beside `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Reads a whole file.
///
/// # Errors
/// [`Error::Read`] naming `path`.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// A model file read from disk: its bytes, checked, and a detector loaded from them.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// Where it came from.
    pub path: PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// A detector of the model's sizes.
    pub detector: DynDetector,
}

impl LoadedModel {
    /// Reads and checks a model file.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::Model`] naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read(path)?;
        let detector = DynDetector::from_bytes(&bytes).map_err(|source| Error::Model {
            path: path.to_owned(),
            source,
        })?;
        Ok(LoadedModel {
            path: path.to_owned(),
            bytes,
            detector,
        })
    }

    /// The checked view of the file (cannot fail once opened).
    #[must_use]
    pub fn view(&self) -> Option<ModelView<'_>> {
        ModelView::from_bytes(&self.bytes).ok()
    }

    /// The model's channel names in order.
    #[must_use]
    pub fn channel_names(&self) -> Vec<String> {
        self.view()
            .map(|v| v.channels().map(|c| c.name.to_owned()).collect())
            .unwrap_or_default()
    }
}
