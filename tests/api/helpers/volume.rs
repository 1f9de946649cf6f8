//! A directory that changes as a Kubernetes ConfigMap or Secret volume does: every file
//! is a symlink `name -> ..data/name`, and an update writes a new timestamped directory
//! and swaps the `..data` symlink to it in one `rename` (kubelet's AtomicWriter). A file
//! is never rewritten in place, so only reading through the path sees the change.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct Volume {
    dir: tempfile::TempDir,
    version: u32,
}

impl Volume {
    /// A volume holding `files` (name, contents).
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().expect("a volume directory"),
            version: 0,
        };
        volume.update(files);
        volume
    }

    /// The path the bridge is given for `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces every file at once: the files are written to a new directory, then
    /// `..data` is swapped to it. A name no longer given disappears.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let root = self.dir.path();
        let data = format!("..2026_12_06_{:04}", self.version);
        std::fs::create_dir(root.join(&data)).expect("a data directory");
        for (name, contents) in files {
            std::fs::write(root.join(&data).join(name), contents).expect("a file");
            let link = root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).expect("the user-visible link");
            }
        }
        let staged = root.join("..data_tmp");
        symlink(&data, &staged).expect("the new ..data");
        std::fs::rename(&staged, root.join("..data")).expect("the swap");
    }
}
